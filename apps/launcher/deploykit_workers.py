"""gunicorn's gevent, eventlet and tornado workers as deploykit runs them: gunicorn's own, with fixes to their
graceful stop (`--worker-class deploykit_workers.GeventWorker`, `.EventletWorker` or `.TornadoWorker`; the
tornado one: see with_prompt_server_stop).

gunicorn's async workers ask the listener for its address when the handler of a connection starts
(`listener.getsockname()` in gunicorn/workers/base_async.py). On a graceful stop they close the listener,
then let the handlers of the connections they had accepted run: a handler that starts after that close fails
with EBADF ("Socket error processing request"), and its connection is closed unanswered. nginx cannot send
such a request again when it is a POST: measured, 1 or 2 POSTs answered 502 in swaps out of gunicorn-eventlet.
These workers learn the address once, before anything is closed, and hand it to the handlers.

And they look at their stop flag once a second (`gevent.sleep(1.0)` / `eventlet.sleep(1.0)` in their run
loop), so their listener stayed open up to a second after SIGTERM, taking connections they then had to drain;
gevent's looks at its pool once a second too before it exits. These workers see their module's library with
a sleep cut in slices of 0.05 s that ends as soon as the worker is no longer alive (`SlicedSleep`): the
listener closes within 0.05 s of the signal, and the worker exits within 0.05 s of its last request.

Each class is made when gunicorn asks for it (module `__getattr__`): the gevent venv has no eventlet, and
the eventlet venv's gunicorn 25 has its own base classes.
"""

from __future__ import annotations

import sys
import time
from typing import Any

# worker class: (gunicorn's module, the name of the library module it sleeps with)
BASES = {"GeventWorker": ("gunicorn.workers.ggevent", "gevent"),
         "EventletWorker": ("gunicorn.workers.geventlet", "eventlet"),
         "TornadoWorker": ("gunicorn.workers.gtornado", None)}
SLICE = 0.05


class SlicedSleep:
    """A library module (gevent, eventlet) as a gunicorn worker module sees it, with a sleep that ends early
    once `stopping()` is true; shorter sleeps and everything else are the library's own."""

    def __init__(self, library: Any, stopping: Any) -> None:
        self._library = library
        self._stopping = stopping

    def sleep(self, seconds: float = 0, *args: Any, **kwargs: Any) -> Any:
        if seconds <= SLICE:
            return self._library.sleep(seconds, *args, **kwargs)
        deadline = time.monotonic() + seconds
        while not self._stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._library.sleep(min(SLICE, left))
        return self._library.sleep(min(SLICE, max(0.0, deadline - time.monotonic())))

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._library, attribute)


class NamedListener:
    """A listener as a request handler sees it: its address as it was before the stop closed it."""

    def __init__(self, listener: Any, name: Any) -> None:
        self._listener = listener
        self._name = name

    def getsockname(self) -> Any:
        return self._name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._listener, attribute)


def with_known_listener_name(base: type, library: str | None = None) -> type:
    """`base` fixed: its handlers get the listener's name from before the stop; and, given the name of the
    library its module sleeps with, that sleep ends soon after the stop signal (SlicedSleep)."""

    class Worker(base):  # type: ignore[misc, valid-type]
        def init_process(self) -> None:
            # one listener: the socket deploykit-serve bound (fd 3); with several, gunicorn's own behaviour
            self.deploykit_listener_name = self.sockets[0].getsockname() if len(self.sockets) == 1 else None
            module = sys.modules[base.__module__]
            if library and not isinstance(getattr(module, library, None), SlicedSleep):
                setattr(module, library, SlicedSleep(getattr(module, library), lambda: not self.alive))
            super().init_process()

        def handle(self, listener: Any, client: Any, addr: Any) -> None:
            if self.deploykit_listener_name is not None:
                listener = NamedListener(listener, self.deploykit_listener_name)
            super().handle(listener, client, addr)

    Worker.__name__ = Worker.__qualname__ = base.__name__
    Worker.__module__ = __name__
    return Worker


def with_prompt_server_stop(base: type) -> type:
    """gunicorn's tornado worker looks at its stop flag once a second (its heartbeat): at the first look after
    SIGTERM its server stops listening, at the next its event loop stops. This one looks every 0.05 s, so its
    listener closes at once, and still gives what it accepted a second before its loop stops."""

    class Worker(base):  # type: ignore[misc, valid-type]
        def init_process(self) -> None:
            module = sys.modules[base.__module__]
            every = module.PeriodicCallback
            worker = self

            def periodic(callback: Any, milliseconds: float, *args: Any, **kwargs: Any) -> Any:
                if callback == worker.heartbeat:
                    milliseconds = SLICE * 1000
                return every(callback, milliseconds, *args, **kwargs)

            module.PeriodicCallback = periodic
            self.deploykit_server_stopped: float | None = None
            super().init_process()

        def heartbeat(self) -> None:
            if self.alive:
                return
            if self.server_alive:
                self.deploykit_server_stopped = time.monotonic()
            elif time.monotonic() - (self.deploykit_server_stopped or 0.0) < 1.0:
                return
            super().heartbeat()

    Worker.__name__ = Worker.__qualname__ = base.__name__
    Worker.__module__ = __name__
    return Worker


def __getattr__(name: str) -> type:
    if name not in BASES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, library = BASES[name]
    base = getattr(importlib.import_module(module), name)
    worker = with_prompt_server_stop(base) if name == "TornadoWorker" else with_known_listener_name(base, library)
    globals()[name] = worker
    return worker
