"""gunicorn's gevent and eventlet workers as deploykit runs them: gunicorn's own, with one fix to their
graceful stop (`--worker-class deploykit_workers.GeventWorker` or `.EventletWorker`).

gunicorn's async workers ask the listener for its address when the handler of a connection starts
(`listener.getsockname()` in gunicorn/workers/base_async.py). On a graceful stop they close the listener,
then let the handlers of the connections they had accepted run: a handler that starts after that close fails
with EBADF ("Socket error processing request"), and its connection is closed unanswered. nginx cannot send
such a request again when it is a POST: measured, 1 or 2 POSTs answered 502 in swaps out of gunicorn-eventlet.
These workers learn the address once, before anything is closed, and hand it to the handlers.

Each class is made when gunicorn asks for it (module `__getattr__`): the gevent venv has no eventlet, and
the eventlet venv's gunicorn 25 has its own base classes.
"""

from __future__ import annotations

from typing import Any

BASES = {"GeventWorker": "gunicorn.workers.ggevent", "EventletWorker": "gunicorn.workers.geventlet"}


class NamedListener:
    """A listener as a request handler sees it: its address as it was before the stop closed it."""

    def __init__(self, listener: Any, name: Any) -> None:
        self._listener = listener
        self._name = name

    def getsockname(self) -> Any:
        return self._name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._listener, attribute)


def with_known_listener_name(base: type) -> type:
    class Worker(base):  # type: ignore[misc, valid-type]
        def init_process(self) -> None:
            # one listener: the socket deploykit-serve bound (fd 3); with several, gunicorn's own behaviour
            self.deploykit_listener_name = self.sockets[0].getsockname() if len(self.sockets) == 1 else None
            super().init_process()

        def handle(self, listener: Any, client: Any, addr: Any) -> None:
            if self.deploykit_listener_name is not None:
                listener = NamedListener(listener, self.deploykit_listener_name)
            super().handle(listener, client, addr)

    Worker.__name__ = Worker.__qualname__ = base.__name__
    Worker.__module__ = __name__
    return Worker


def __getattr__(name: str) -> type:
    if name not in BASES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    worker = with_known_listener_name(getattr(importlib.import_module(BASES[name]), name))
    globals()[name] = worker
    return worker
