"""How a new container replaces the old ones, for library/deploykit_swap.py: one class per strategy, chosen by name
(STRATEGIES, the module's `strategy` choices). Each says where the new container listens and what is done with
the old ones before it starts, when it fails, and once it passed its gate; the swap (Swapper) does the rest."""

from __future__ import annotations

from typing import ClassVar

from ansible.module_utils.deploykit_containers import Container, Docker, Params, SwapError
from ansible.module_utils.deploykit_drain import Drain, Held, Mark


class Strategy:
    shares_port: ClassVar[bool] = False  # the new container joins the old ones' port: same protocol only
    caller_retires: ClassVar[bool] = False  # running old containers are returned in `retire`, for the caller

    def __init__(self, params: Params, docker: Docker, drain: Drain, mark: Mark) -> None:
        self.params = params
        self.docker = docker
        self.drain = drain
        self.mark = mark

    def listen_port(self, containers: list[Container]) -> int:
        """Where the new container listens: the configured port."""
        port: int = self.params["health"]["port"]
        return port

    def before_start(self, running: dict[str, str]) -> None:
        """Before the new container starts; `running` are the old containers that run ({name: restart policy})."""

    def held_during_gate(self, running: dict[str, str]) -> dict[str, str]:
        """The old containers to ready for a quick stop while the new one is under its gate (see Drain.hold)."""
        return {}

    def on_failure(self, new: str, running: dict[str, str], containers: list[Container], failure: SwapError) -> None:
        """The new container `new` did not start or failed its gate (`failure`, raised after this)."""

    def after_gate(self, new: str, olds: list[str], running: dict[str, str], port: int, held: Held,
                   restarts: str) -> list[str]:
        """The new container passed its gate: what becomes of the old ones `olds`. The ones left running for
        the caller to stop (RV(retire))."""
        raise NotImplementedError


class ReusePort(Strategy):
    """The new container joins the running one's port (SO_REUSEPORT); the olds drain once it passed its gate."""

    shares_port = True

    def listen_port(self, containers: list[Container]) -> int:
        """The running container's port (wherever blue-green left it), else the configured one."""
        running = [c.port for c in containers if c.running and c.port]
        return running[-1] if running else super().listen_port(containers)

    def held_during_gate(self, running: dict[str, str]) -> dict[str, str]:
        return running

    def after_gate(self, new: str, olds: list[str], running: dict[str, str], port: int, held: Held,
                   restarts: str) -> list[str]:
        for dead in [o for o in olds if o not in running]:  # leftovers: nothing to drain or to start again
            self.drain.stop_and_remove(dead)
        self.drain.retire([o for o in olds if o in running], "old_stopped", successor=new, port=port, held=held,
                          restarts=restarts)
        return []


class Recreate(Strategy):
    """The old containers stop first, then the new one starts on the configured port (the downtime baseline)."""

    def before_start(self, running: dict[str, str]) -> None:
        # stopped, not removed: they are started again if the new one fails
        self.drain.stop(sorted(running))
        if running:
            self.mark("old_stopped")

    def on_failure(self, new: str, running: dict[str, str], containers: list[Container], failure: SwapError) -> None:
        if running:
            self.drain.start_again(new, sorted(running), containers, failure)

    def after_gate(self, new: str, olds: list[str], running: dict[str, str], port: int, held: Held,
                   restarts: str) -> list[str]:
        self.drain.remove(olds, "old_removed" if olds else None)
        return []


class BlueGreen(Strategy):
    """The new container listens on the other of two ports; the running olds are left to the caller, who points
    nginx at the new port first."""

    caller_retires = True

    def listen_port(self, containers: list[Container]) -> int:
        """The one of the two ports that no running container of the app holds."""
        configured = self.params["health"]["port"]
        running = [c.port for c in containers if c.running and c.port]
        ports = self.params["ports"] or [configured, configured + 1]
        if len(ports) != 2 or ports[0] == ports[1]:
            raise SwapError(f"blue-green needs two different ports, not {ports}")
        free = [port for port in ports if port not in running]
        if not free:
            raise SwapError(f"both blue-green ports {ports} are held by running containers of {self.params['app']} (an "
                            "interrupted deploy): deploy again with strategy reuse-port to converge")
        port: int = free[0]
        return port

    def after_gate(self, new: str, olds: list[str], running: dict[str, str], port: int, held: Held,
                   restarts: str) -> list[str]:
        for old in [o for o in olds if o not in running]:  # already stopped: nothing to drain
            self.drain.stop_and_remove(old)
        return [o for o in olds if o in running]


STRATEGIES: dict[str, type[Strategy]] = {"reuse-port": ReusePort, "recreate": Recreate, "blue-green": BlueGreen}
