"""WSGI adapters the launcher puts around an app: mark_answers always, outermost; others named by a variant's
`wrap` in roles/app/vars/main/variants.yml.

The launcher points every server at `deploykit_wsgi:application` and passes the real app as
DEPLOYKIT_WSGI_TARGET (module:attribute, or module:factory() for an app factory, called once) and the
adapters as DEPLOYKIT_WSGI_WRAP (comma-separated, outermost first).
"""

from __future__ import annotations

import contextvars
import importlib
import io
import os
import sys
import threading
import time

INSTANCE_HEADER = "X-Deploykit-Instance"
RELEASE_HEADER = "X-Deploykit-Release"


def mark_answers(app):
    """Every answer says which container gave it and its release: while two containers share the port in a
    swap, the health gate counts only the new one's answers, and the deploy's last check through nginx finds
    the release, with no deploykit code in the app."""
    marks = [(INSTANCE_HEADER, os.environ.get("DEPLOYKIT_INSTANCE", "")),
             (RELEASE_HEADER, os.environ.get("DEPLOYKIT_RELEASE", ""))]

    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, list(headers) + marks, exc_info)

        return app(environ, start)

    return wrapped


def strip_header_whitespace(app):
    """Tornado's WSGIContainer rejects header values with leading whitespace, and Django writes Set-Cookie
    values with one (SimpleCookie.output(header="")): the request then dies without an answer."""

    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [(name, value.strip()) for name, value in headers], exc_info)

        return app(environ, start)

    return wrapped


class _BodyInContext:
    """A WSGI response whose iteration and close() run in `context`, as its call did."""

    def __init__(self, context: contextvars.Context, body) -> None:
        self._context, self._body = context, body

    def __iter__(self):
        chunks = self._context.run(iter, self._body)
        while True:
            try:
                yield self._context.run(next, chunks)
            except StopIteration:
                return

    def close(self) -> None:
        if hasattr(self._body, "close"):
            self._context.run(self._body.close)


def one_context_per_thread(app):
    """Tornado's WSGIContainer calls the app in a new asyncio task per request, so in a fresh copy of the
    context, and Django keeps its database connections in context-local storage: every request opened a
    connection that nothing closed (297 idle on PostgreSQL after one smoke benchmark of a 4-worker container,
    then "too many clients" for every app on that database). Run each call, its iteration and its close()
    in one context per thread, as a threaded server does: a connection per worker thread, reused and closed
    by Django's usual rules (CONN_MAX_AGE)."""
    local = threading.local()

    def wrapped(environ, start_response):
        if not hasattr(local, "context"):
            local.context = contextvars.copy_context()
        return _BodyInContext(local.context, local.context.run(app, environ, start_response))

    return wrapped


ADAPTERS = {"mark_answers": mark_answers, "strip_header_whitespace": strip_header_whitespace,
            "one_context_per_thread": one_context_per_thread}


def wrap(app, names: str):
    """`app` inside the adapters named in `names` (comma-separated, outermost first)."""
    for name in reversed([n.strip() for n in names.split(",") if n.strip()]):
        app = ADAPTERS[name](app)
    return app


def load(target: str):
    module, _, name = target.partition(":")
    found = getattr(importlib.import_module(module), name.removesuffix("()"))
    return found() if name.endswith("()") else found


def ask(app, path: str, host: str, agent: str) -> tuple[str, bytes]:
    """GET `path` (with its query string) of the WSGI callable itself, in this process: its status line and the
    start of its body."""
    answer: dict[str, str] = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = status
        return lambda data: None

    route, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": route, "QUERY_STRING": query, "SCRIPT_NAME": "",
               "SERVER_NAME": host, "SERVER_PORT": "80", "HTTP_HOST": host, "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
               "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
               "wsgi.run_once": False, "REMOTE_ADDR": "127.0.0.1", "HTTP_USER_AGENT": agent}
    body = app(environ, start_response)
    try:
        text = b"".join(body)[:300]
    finally:
        if hasattr(body, "close"):
            body.close()
    return answer.get("status", ""), text


def close_database_connections() -> None:
    """Django's connections opened in this process, closed: none may be shared with a process forked from it."""
    if "django.db" in sys.modules:
        sys.modules["django.db"].connections.close_all()


def warm_up(app, paths: str, host: str, asker=None) -> None:
    """Ask the app for each of `paths` (comma-separated) once, in this process, before its server takes requests:
    what the app builds on its first request (Django's URL resolver, its templates, a cache) is built before a
    user waits for it. A server process loads this module before it accepts connections (each gunicorn worker;
    uWSGI's and flup's master, before they fork). A path that fails is said on stderr and does not stop it."""
    for path in [p.strip() for p in paths.split(",") if p.strip()]:
        began = time.monotonic()
        try:
            status, _ = (asker or ask)(app, path, host, "deploykit warm-up")
            said = status or "no status"
        except Exception as exc:  # noqa: BLE001 - a warm-up is a courtesy: the health gate judges the release
            said = f"failed: {type(exc).__name__}: {exc}"
        print(f"deploykit: warm-up GET {path}: {said} ({1000 * (time.monotonic() - began):.0f} ms, pid "
              f"{os.getpid()})", file=sys.stderr, flush=True)
    close_database_connections()


def outside_event_loop(function, *args) -> None:
    """function(*args) here, or in a thread of its own when an event loop runs in this thread: uvicorn imports
    the app inside its loop, where Django refuses synchronous database calls (and asyncio.run cannot run)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        function(*args)
        return
    thread = threading.Thread(target=function, args=args, name="deploykit-warm-up")
    thread.start()
    thread.join()


def first_host(environ=None) -> str:
    """The Host a request made in-process sends: the first of Django's allowed hosts, else localhost."""
    names = [h for h in (os.environ if environ is None else environ).get("DJANGO_ALLOWED_HOSTS", "").split(",") if h]
    return names[0] if names else "localhost"


if "DEPLOYKIT_WSGI_TARGET" in os.environ:
    application = wrap(load(os.environ["DEPLOYKIT_WSGI_TARGET"]), os.environ["DEPLOYKIT_WSGI_WRAP"])
    if os.environ.get("DEPLOYKIT_WARMUP"):
        outside_event_loop(warm_up, application, os.environ["DEPLOYKIT_WARMUP"], first_host())
