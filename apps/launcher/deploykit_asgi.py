"""The app as the ASGI servers (uvicorn, granian's asgi interface) load it: `deploykit_asgi:application`.

Two ways, as the launcher sets them (deploykit_serve.server_environment):
- the app's own ASGI entry (deploykit.yml app.asgi, e.g. a Django project's `mysite.asgi:application`), named by
  DEPLOYKIT_ASGI_TARGET: served natively, inside `mark_answers` (the ASGI twin of deploykit_wsgi's);
- otherwise the WSGI app, inside deploykit_wsgi's adapters, through a2wsgi's WSGIMiddleware (as the field's
  reference runs served WSGI apps on ASGI servers): its DEPLOYKIT_THREADS threads are DaemonThreads.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from concurrent.futures import Executor, Future
from typing import Any

from deploykit_wsgi import INSTANCE_HEADER, RELEASE_HEADER, first_host, load, outside_event_loop, warm_up


def mark_answers(app: Any) -> Any:
    """Every answer says which container gave it and its release (deploykit_wsgi.mark_answers' reasons)."""
    marks = [(INSTANCE_HEADER.lower().encode(), os.environ.get("DEPLOYKIT_INSTANCE", "").encode()),
             (RELEASE_HEADER.lower().encode(), os.environ.get("DEPLOYKIT_RELEASE", "").encode())]

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def marked(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *marks]}
            await send(message)

        return await app(scope, receive, marked)

    return wrapped


class DaemonThreads(Executor):
    """A pool of `size` threads that the process's exit does not wait for (started at the first job: not before a
    server forks). a2wsgi's own pool is a ThreadPoolExecutor, which the exit joins; and granian's ASGI worker can
    stop its event loop once a response's bytes are out, before a2wsgi's thread has handed it the closing empty
    body: that thread then waits for the stopped loop for ever, and the exit with it. Measured: 2 of 8 stops of
    granian-asgi with a request in flight took the whole kill timeout (20 s, "Killing worker-1 after it refused
    to gracefully stop"); the thread's stack was a2wsgi's send()."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: queue.SimpleQueue[tuple[Future[Any], Any, tuple[Any, ...]]] = queue.SimpleQueue()
        self.started = False
        self.lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        if kwargs:
            raise TypeError("DaemonThreads.submit takes positional arguments only (as asyncio's run_in_executor)")
        with self.lock:
            if not self.started:
                for number in range(self.size):
                    threading.Thread(target=self._work, name=f"WSGI-{number}", daemon=True).start()
                self.started = True
        future: Future[Any] = Future()
        self.jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self.jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the awaiting request, as ThreadPoolExecutor does
                future.set_exception(exc)


def from_wsgi(wsgi_app: Any, threads: int) -> Any:
    """A WSGI app served over ASGI: each request runs in one of `threads` threads. a2wsgi hands the server's
    receive() and send() to its event loop from those threads as coroutines, and granian's return awaitables of
    its own, which asyncio refuses there ("A coroutine object is required": every request with a body answered
    500 on granian-asgi): so they are called through coroutines."""
    from a2wsgi import WSGIMiddleware

    inner = WSGIMiddleware(wsgi_app, workers=threads)
    inner.executor.shutdown(wait=False)  # no thread started yet; its requests run in DaemonThreads instead
    inner.executor = DaemonThreads(threads)

    async def app(scope, receive, send):
        async def receive_coroutine():
            return await receive()

        async def send_coroutine(message):
            return await send(message)

        return await inner(scope, receive_coroutine, send_coroutine)

    return app


def ask(app: Any, path: str, host: str, agent: str) -> tuple[str, bytes]:
    """GET `path` of the ASGI app itself, in this process (deploykit_wsgi.ask's twin): its status line, e.g.
    "200", and the start of its body."""
    route, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": route, "raw_path": route.encode(),
             "query_string": query.encode(), "root_path": "", "server": (host, 80), "client": ("127.0.0.1", 0),
             "headers": [(b"host", host.encode()), (b"user-agent", agent.encode())]}
    answer: dict[str, Any] = {"status": "", "body": b""}

    async def run() -> None:
        requested, answered = asyncio.Event(), asyncio.Event()

        async def receive():
            if not requested.is_set():
                requested.set()
                return {"type": "http.request", "body": b"", "more_body": False}
            await answered.wait()  # the client stays until the answer is complete (Django listens for this)
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = str(message["status"])
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")
                if not message.get("more_body"):
                    answered.set()

        await app(scope, receive, send)

    asyncio.run(run())
    return answer["status"], answer["body"][:300]


def build() -> Any:
    if os.environ.get("DEPLOYKIT_ASGI_TARGET"):
        return mark_answers(load(os.environ["DEPLOYKIT_ASGI_TARGET"]))
    import deploykit_wsgi

    return from_wsgi(deploykit_wsgi.application, int(os.environ.get("DEPLOYKIT_THREADS", "1")))


if "DEPLOYKIT_ASGI_TARGET" in os.environ or "DEPLOYKIT_WSGI_TARGET" in os.environ:
    application = build()
    if os.environ.get("DEPLOYKIT_ASGI_TARGET") and os.environ.get("DEPLOYKIT_WARMUP"):  # deploykit_wsgi's own else
        outside_event_loop(warm_up, application, os.environ["DEPLOYKIT_WARMUP"], first_host(), ask)
