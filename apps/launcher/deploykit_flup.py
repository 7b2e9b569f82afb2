#!/usr/bin/env python3
"""FastCGI with flup, stopping gracefully. The listening socket is fd 0 (the FastCGI convention).

flup alone loses requests at a stop: its threaded pool drops jobs still queued when it shuts down, and its
prefork parent ignores SIGTERM while idle and keeps the listener open until its children exit. Here, on
SIGTERM: the listener is shut down at once (connections still in its accept queue migrate to the other
SO_REUSEPORT listener, with net.ipv4.tcp_migrate_req=1), requests in flight finish, then the process exits.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import socket
import sys
import time

from flup.server import fcgi, fcgi_single
from flup.server.threadedserver import ThreadedServer

LISTEN_FD = 0


def load_app(target: str, chdir: str):
    os.chdir(chdir)
    sys.path.insert(0, chdir)
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def listener() -> socket.socket:
    return socket.socket(fileno=os.dup(LISTEN_FD))


def web_server_addrs() -> list[str] | None:
    """flup's FCGI_WEB_SERVER_ADDRS allow-list, as its own run() would read it."""
    raw = os.environ.get("FCGI_WEB_SERVER_ADDRS")
    return [addr.strip() for addr in raw.split(",")] if raw else None


def stop_listening(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class GracefulThreadedServer(fcgi.WSGIServer):
    """flup's threaded FastCGI server, whose stop finishes every accepted request.

    flup closes a new connection when all its threads are busy (the web server sees a reset, nginx a 502);
    here it waits in the pool's queue for the next free thread instead.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        add_job = self._threadPool.addJob
        self._threadPool.addJob = lambda job, allowQueuing=True: add_job(job, allowQueuing=True)

    def _intHandler(self, signum, frame):  # noqa: N802 (flup's name)
        self._keepGoing = False
        stop_listening(self._listener)

    def run(self):
        self._web_server_addrs = web_server_addrs()
        sock = self._setupSocket()
        self._listener = sock
        try:
            ThreadedServer.run(self, sock, timeout=0.5)
        except OSError:
            if self._keepGoing:
                raise  # a real error, not the listener we shut down
        self._cleanupSocket(sock)
        self._drain()
        self.shutdown()

    def _drain(self) -> None:
        pool = self._threadPool
        while True:
            with pool._lock:
                if not pool._workQueue:
                    return
            time.sleep(0.01)


class GracefulSingleServer(fcgi_single.WSGIServer):
    """One prefork child: serves one connection at a time; SIGTERM ends it after the current request."""

    def run(self):
        self._web_server_addrs = web_server_addrs()
        sock = self._setupSocket()
        try:
            fcgi_single.SingleServer.run(self, sock, timeout=0.5)
        except OSError:
            if self._keepGoing:
                raise
        self._cleanupSocket(sock)


def run_prefork(app, processes: int) -> int:
    children: set[int] = set()
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            GracefulSingleServer(app, bindAddress=None, debug=False).run()
            os._exit(0)
        children.add(pid)

    def on_term(signum, frame):
        nonlocal stopping
        stopping = True
        stop_listening(sock)
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    sock = listener()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    for _ in range(processes):
        spawn()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if not stopping:
            print(f"deploykit_flup: child {pid} exited ({status}); starting another", file=sys.stderr, flush=True)
            time.sleep(0.1)
            spawn()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["prefork", "threaded"], required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--chdir", required=True)
    parser.add_argument("--app", required=True, help="module:callable")
    args = parser.parse_args(argv)
    app = load_app(args.app, args.chdir)
    if args.mode == "threaded":
        server = GracefulThreadedServer(app, bindAddress=None, debug=False, multithreaded=True,
                                        maxThreads=args.threads, minSpare=1, maxSpare=args.threads)
        server.run()
        return 0
    return run_prefork(app, args.processes)


if __name__ == "__main__":
    sys.exit(main())
