"""The new container's health gate, for library/deploykit_swap.py: a streak of healthy answers that name it, until
the health timeout (Gate.health_gate), then the settle window in which it must keep running and answering
healthily (Gate.settle). On a failure either raises SwapError with the container's last logs; what is then done
with the containers is the swap's (module_utils/deploykit_swapper.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ansible.module_utils.deploykit_containers import Docker, Params, SwapError, last_words
from ansible.module_utils.deploykit_probe import ProbeError, probe, until_streak

INSTANCE_HEADER = "x-deploykit-instance"  # every answer names its container (apps/launcher/deploykit_wsgi.py)


class Gate:
    def __init__(self, docker: Docker, params: Params) -> None:
        self.docker = docker
        self.params = params

    def health_gate(self, name: str, port: int) -> int:
        """`successes` healthy answers in a row from the new container `name` on `port` within the health
        timeout: probes sent. Successes must come from the new container itself: its name is in the health
        answer; an answer from the old container is neither success nor failure."""
        h = dict(self.params["health"], port=port)
        deadline = time.monotonic() + h["timeout"]
        last = "no answer yet"

        def attempt() -> bool | None:
            nonlocal last
            try:
                status, _, headers = probe(h["protocol"], h["address"], h["port"], h["path"], h["host_header"], 5.0)
            except (OSError, ProbeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                return False
            if not 200 <= status < 300:
                last = f"status {status} from {headers.get(INSTANCE_HEADER) or 'the port'}"
                return False
            return True if headers.get(INSTANCE_HEADER) == name else None

        def alive() -> bool:
            if not self.docker.running(name):
                logs = self.docker.logs(name)
                raise SwapError(f"the new container {name} exited before it was healthy{last_words(logs)}",
                                logs=logs)
            return True

        passed: bool
        attempts: int
        passed, attempts = until_streak(attempt, h["successes"], h["interval"],
                                        before=lambda: time.monotonic() < deadline, after=alive)
        if passed:
            return attempts
        raise SwapError(f"the new container {name} did not pass its health gate within {h['timeout']}s (last: {last})",
                        logs=self.docker.logs(name), health_attempts=attempts)

    def settle(self, name: str, port: int, restarts: str, since_ready: Callable[[], float]) -> None:
        """The rest of the gate: for `settle` seconds after its streak, while the old one still serves, the new
        container must keep running (not restarted: its restart policy is set by now) and every answer it
        gives must be healthy. A release that crashes or fails soon after its first answers is caught here:
        it is removed, and the error says how long after its streak (since_ready() seconds)."""
        h = self.params["health"]
        deadline = time.monotonic() + self.params["settle"]
        while True:
            failure = None
            running, now = self.docker.state(name)
            if not running or now != restarts:
                failure = "exited"
            else:
                try:
                    status, _, headers = probe(h["protocol"], h["address"], port, h["path"], h["host_header"], 5.0)
                    if not 200 <= status < 300 and headers.get(INSTANCE_HEADER) == name:
                        failure = f"answered status {status}"
                    elif not 200 <= status < 300 and INSTANCE_HEADER not in headers:  # whose? the port answers badly
                        failure = f"(or the old one) answered status {status}"
                except (OSError, ProbeError) as exc:
                    failure = f"(or the old one) failed a probe ({type(exc).__name__}: {exc})"
            if failure:
                logs = self.docker.logs(name)
                self.docker.force_remove(name)
                raise SwapError(f"the new container {name} {failure} {since_ready():.1f} s after its first healthy "
                                "answers; the old one kept serving", logs=logs)
            if time.monotonic() >= deadline:
                break
            time.sleep(h["interval"])
