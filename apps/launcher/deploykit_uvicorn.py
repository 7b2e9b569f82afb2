#!/usr/bin/env python3
"""uvicorn on its own (no gunicorn), stopping gracefully. The listening socket is fd 3, bound by deploykit-serve.

uvicorn's command line (`uvicorn --fd 3`) keeps a listener at a stop (measured: the port still took connections
until the process exited, 1.1 s after SIGTERM with a 1.5 s request in flight): it serves a duplicate of the
fd and closes only that; with --workers its parent holds the socket until its children exit and looks at its
signals twice a second. Here, on SIGTERM (or SIGINT), the socket is closed at once in every process: the
parent's copy in its signal handler, each worker's by uvicorn's own shutdown (which closes the sockets it
was given, then lets requests in flight finish). Connections still queued move to the port's other
SO_REUSEPORT listener (net.ipv4.tcp_migrate_req=1). The process exits 0 after a stop signal, 1 when the app
never started.

And uvicorn's stop closes every idle kept connection at once, while nginx may be sending a request on it: a
request nginx cannot send again when it is a POST (502). Measured with kept-alive POST clients and a second
listener on the port: 4 such requests lost in 10 stops, and 1 POST answered 502 in a clean-clone run of
tests/test_swap_posts.py. Here (DrainingHttpToolsProtocol, also in gunicorn's uvicorn workers: `UvicornWorker`)
a kept connection idle at the stop is left to its client, as gunicorn's gthread workers do: nginx closes it
first (nginx_upstream_keepalive_timeout, 500 ms); a request that comes on it is answered with
`connection: close`; uvicorn's own keep-alive timeout (KEEP_ALIVE, the same 2 s as gunicorn's) closes it if
the client does not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn
import uvicorn_worker
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

LISTEN_FD = 3
KEEP_ALIVE = 2  # seconds an idle kept connection stays open: gunicorn's default, above nginx's 500 ms


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1 connection (httptools), which at the stop leaves an idle kept connection to its client:
    a request that comes on it after the stop is answered with `connection: close`, and the connection is
    closed when still idle KEEP_ALIVE seconds later (uvicorn's own closes it at once, racing the client)."""

    draining = False

    def idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def shutdown(self) -> None:
        if self.draining or not self.idle():
            super().shutdown()  # in flight: its answer says `connection: close`; idle at the second call: closed
        elif not self.transport.is_closing():
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.shutdown)
        self.draining = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False


class UvicornWorker(uvicorn_worker.UvicornWorker):  # type: ignore[misc]
    """gunicorn's uvicorn worker (the uvicorn-worker package) with DrainingHttpToolsProtocol's stop
    (`--worker-class deploykit_uvicorn.UvicornWorker`; gunicorn gives it its keep-alive, 2 s)."""

    CONFIG_KWARGS = {**uvicorn_worker.UvicornWorker.CONFIG_KWARGS, "http": DrainingHttpToolsProtocol}


class Server(uvicorn.Server):
    """uvicorn's server, which does not raise the stop signal again once it has stopped (it does so that the
    process dies of it: an exit code of -15 where a graceful stop should say 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, which at the stop signal closes its copy of the listener and
    passes the signal on to its workers at once (uvicorn's looks at its signals every 0.5 s)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.stopped = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.stop)

    def stop(self, sig: int, frame: object) -> None:
        # no lock may be taken here (the main thread may hold should_exit's): uvicorn's loop sets it from the queue
        self.stopped = True
        for sock in self.sockets:
            sock.close()
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, TypeError):  # TypeError: not started yet (pid None)
                os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
        self.signal_queue.append(sig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--graceful-timeout", type=int, default=30)
    parser.add_argument("--chdir", default=".")
    parser.add_argument("--app", required=True, help="module:attribute of the ASGI app")
    args = parser.parse_args(argv)
    os.chdir(args.chdir)
    sys.path.insert(0, args.chdir)  # spawned workers get the parent's sys.path
    config = uvicorn.Config(args.app, workers=args.processes, log_level="warning", access_log=False,
                            http=DrainingHttpToolsProtocol, timeout_keep_alive=KEEP_ALIVE,
                            timeout_graceful_shutdown=args.graceful_timeout)
    listener = socket.socket(fileno=LISTEN_FD)
    if args.processes == 1:
        server = Server(config)
        server.run(sockets=[listener])
        return 0 if server.started else 1
    supervisor = Supervisor(config, sockets=[listener])
    supervisor.run()
    return 0 if supervisor.stopped else 1  # its workers failed to start: it gave up


if __name__ == "__main__":
    sys.exit(main())
