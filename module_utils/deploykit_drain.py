"""The old containers' side of a swap, for library/deploykit_swap.py: readied for a quick stop while the new one is
under its gate (hold, undone by release), stopped through their pidfd with their drain watched (stop, watch),
retired with the drain guards keeping the port's listener (retire), and started again when the new container
died meanwhile (restore) or failed after a recreate stopped them (start_again)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from ansible.module_utils.deploykit_containers import Container, Docker, Params, SwapError
from ansible.module_utils.deploykit_host import (
    LISTEN,
    PortGuard,
    container_pids,
    held_sockets,
    listeners,
    listens,
    pause,
    resume,
    wait_listening,
)

# what hold took of each old container: {name: (pidfd or None, stop signal, container id, whether its listener
# is seen)}
Held = dict[str, tuple[int | None, str, str, bool]]
Mark = Callable[..., None]  # the swap's mark(step, **details): a timing, in the progress file too


class Drain:
    def __init__(self, module: Any, docker: Docker, params: Params, mark: Mark, timings: dict[str, float]) -> None:
        self.module = module
        self.docker = docker
        self.params = params
        self.mark = mark
        self.timings = timings  # the swap's, which mark fills
        self.policies: dict[str, str] = {}  # restart policies hold took from the old containers, {name: policy}
        self.guards: list[PortGuard] = []  # drain guards made during the gate (see hold), started before the signal

    def mark_once(self, step: str) -> None:
        """Mark `step` unless it was marked: with several old containers, an old_* step is the first one's."""
        if step not in self.timings:
            self.mark(step)

    def hold(self, olds: dict[str, str], port: int) -> Held:
        """Ready the old containers' quick stop, while the new one is still under its gate: no restart policy
        (their server exits on a signal sent directly, which docker would take for a crash), a pidfd of their
        main process, and whether their listener on `port` can be seen (then their drain can be watched, see
        watch). Then stopping takes no docker call. {name: (pidfd or None, stop signal, container id, whether
        its listener is seen)}; a container without a pidfd is stopped by docker. The drain guards are made
        too (self.guards, bound but not listening: see PortGuard)."""
        if not olds:
            return {}
        self.policies.update(olds)
        self.docker.set_restart("no", *sorted(olds))
        held: Held = {}
        for info in filter(None, map(self.docker.inspect, sorted(olds))):
            fd: int | None
            try:
                fd = os.pidfd_open(int(info["State"]["Pid"]))
            except (AttributeError, OSError, ValueError):  # Python < 3.9, Linux < 5.3, or it exited already (pid 0)
                fd = None
            seen = LISTEN in held_sockets(container_pids([info["Id"]]), port).values()
            held[info["Name"].lstrip("/")] = (fd, info["Config"].get("StopSignal") or "SIGTERM", info["Id"], seen)
        if self.params["drain_guard"]:
            self.guards = self.guard(port)  # bound, not listening: see PortGuard
        return held

    def release(self, held: Held, olds: dict[str, str]) -> None:
        """Undo hold: the olds serve on, with their restart policy back."""
        for fd, _, _, _ in held.values():
            if fd is not None:
                os.close(fd)
        held.clear()
        for guard in self.guards:
            guard.close()
        self.guards = []
        self.give_back_policies(list(olds))

    def give_back_policies(self, names: list[str]) -> None:
        """The restart policies hold took from the containers `names`, back (one docker call per policy)."""
        policies = {n: self.policies.get(n) or self.params["restart_policy"] for n in names}
        for policy in sorted(set(policies.values())):
            self.docker.set_restart(policy, *sorted(n for n in policies if policies[n] == policy))

    def guard(self, port: int) -> list[PortGuard]:
        """Drain guards for the port's current listeners (see PortGuard); none when ss is missing."""
        guards = []
        for address, uid in sorted(set((a, u) for a, u, _ in listeners(self.module.run_command, port) or [])):
            try:
                guards.append(PortGuard(address, port, uid))
            except (OSError, ValueError) as exc:
                self.module.warn(f"no drain guard on {address}:{port} ({exc}): a new container dying while the old "
                                 "one drains would leave the port without a listener")
        return guards

    def stop(self, names: list[str], held: Held | None = None, step: str | None = None, port: int | None = None,
             before: Callable[[], object] | None = None) -> None:
        """Stop the containers gracefully, at most stop_timeout seconds each: a held one with its stop signal
        sent to its pidfd, then until its main process exits (a container's other processes end with it) or
        its drain on `port` is over (see watch); the others with docker stop. `before` is called right before
        the signals are sent. Returns once none runs."""
        held = held or {}
        if before:
            before()
        timeout = self.params["stop_timeout"]
        waiting: dict[int, str] = {}  # {pidfd: name}
        watched: dict[int, str] = {}  # {pidfd: container id}: its sockets on `port` tell when it drained
        for name in names:
            fd, name_of_signal, container, seen = held.pop(name, (None, "", "", False))
            if fd is not None:
                try:
                    signal.pidfd_send_signal(fd, getattr(signal, name_of_signal or "SIGTERM", signal.SIGTERM))
                    waiting[fd] = name
                    if port and seen:
                        watched[fd] = container
                    continue
                except ProcessLookupError:  # exited already
                    os.close(fd)
                    continue
                except (AttributeError, OSError):
                    os.close(fd)
            self.docker("stop", "--time", str(timeout), name, check=False)
        if step and waiting:
            self.mark(step)
        deadline = time.monotonic() + timeout
        drained: dict[int, float] = {}  # {pidfd: since when it has had no connection}
        while waiting and time.monotonic() < deadline:
            period = 0.02 if watched else max(0.0, deadline - time.monotonic())
            for fd in select.select(list(waiting), [], [], period)[0]:
                del waiting[fd]
                watched.pop(fd, None)
                os.close(fd)
            for fd, container in list(watched.items()):
                if self.watch(fd, container, port, drained):
                    del watched[fd]
        for fd, name in waiting.items():
            os.close(fd)
            self.docker("kill", name, check=False)

    def watch(self, fd: int, container: str, port: int | None, drained: dict[int, float]) -> bool:
        """One look at an old container that drains on `port`; True once it was killed.

        Marks old_closed once it no longer listens, and old_drained once it holds no connection of the port:
        every request it accepted was answered. What is left of its stop is its own housekeeping: workers
        exiting one by one, a master that looks at them once a second (uWSGI), listeners they still hold.
        exit_grace seconds later, if it still runs, its processes are paused (SIGSTOP: none can accept a
        connection any more) and looked at again; with still no connection it is killed, and the connections
        queued on a listener it held move to the new container's (tcp_migrate_req). Otherwise it resumes."""
        pids = container_pids([container])
        states = list(held_sockets(pids, port).values())
        if LISTEN not in states:
            self.mark_once("old_closed")
        if any(state != LISTEN for state in states):
            drained.pop(fd, None)
            return False
        self.mark_once("old_drained")
        since = drained.setdefault(fd, time.monotonic())
        if time.monotonic() - since < self.params["exit_grace"]:
            return False
        if states and not pause(pids):
            return False
        if states and any(state != LISTEN for state in held_sockets(pids, port).values()):
            resume(pids)  # it accepted one before it stopped: let it answer
            drained.pop(fd, None)
            return False
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        self.mark_once("old_killed")
        return True

    def retire(self, names: list[str], step: str | None = None, successor: str | None = None, port: int | None = None,
               held: Held | None = None, restarts: str | None = None) -> None:
        """Stop the containers (SIGTERM, at most stop_timeout seconds of drain), mark `step`, then remove them
        and mark `step`_removed: a stopped container serves nothing, its removal is housekeeping.

        With a `successor` (the new container, on `port`), the drain guards that hold made during its gate keep
        a listener on the port while they drain. When the successor died meanwhile (or was restarted by its
        policy), the stopped containers are started again and the guards are closed only once they listen: no
        connection finds the port closed."""
        guards: list[PortGuard] = []
        if successor and names and port:
            guards, self.guards = self.guards, []
        try:
            if successor and restarts is None:
                restarts = self.docker.state(successor)[1]
            # the guards join the port right before the old ones get their signal: they close their listeners
            self.stop(names, held, step=step and step.replace("stopped", "signalled"), port=port,
                      before=lambda: [guard.start() for guard in guards])
            if step:
                self.mark(step)
            if successor and names and port is not None:  # a successor comes with its port
                if guards:  # the new one has all the traffic now: a release that falls over under it does so here
                    time.sleep(self.params["drain_guard_hold"])
                if not self.serves(successor, restarts, port):
                    self.restore(names, successor, port, guards)
        finally:
            for guard in guards:
                guard.close()
        self.remove(names, step and step.replace("stopped", "removed"))

    def stop_and_remove(self, name: str) -> None:
        """SIGTERM, at most stop_timeout seconds of drain, then remove."""
        self.retire([name])

    def remove(self, names: list[str], step: str | None = None) -> None:
        """Remove the (stopped) containers, then mark `step`."""
        self.docker.remove(names)
        if step:
            self.mark(step)

    def serves(self, name: str, restarts: str | None, port: int) -> bool:
        """Whether the container still runs as it did (not restarted since) and, when ss can tell, listens on
        `port` (a server shutting down has closed its listener before its process exits)."""
        running, now = self.docker.state(name)
        if not running or now != restarts:
            return False
        listening = listens(self.module.run_command, port, lambda: self.docker.container_ids([name]))
        return listening is None or listening  # None: ss cannot tell

    def restore(self, names: list[str], successor: str, port: int, guards: list[PortGuard]) -> None:
        """The successor died while `names` drained: start `names` again at once (the guards hold the port
        meanwhile), close the guards once they listen, then stop what is left of the successor; fail the swap."""
        self.docker.set_restart("no", successor)  # its policy must not bring it back
        self.docker.start(names)
        self.give_back_policies(names)
        again = self.listening_again(names, port)
        for guard in guards:
            guard.close()
        # gracefully, its queue moves to the old one; briefly: a server in its quick shutdown may be stuck
        self.docker("stop", "--time", "2", successor, check=False)
        logs = self.docker.logs(successor)
        self.docker.force_remove(successor)
        raise SwapError(f"the new container {successor} exited while the old one drained; {again}", logs=logs)

    def start_again(self, new: str, names: list[str], containers: list[Container], failure: SwapError) -> None:
        """Recreate stopped the old containers `names` before the new one failed: remove what is left of the
        new one, start the old ones again, then raise the failure, saying so. A protocol change is named: nginx
        speaks the old one until the deploy is done, and under traffic that can keep the new server too busy
        to pass its gate."""
        self.docker.force_remove(new)
        self.docker.start(names)
        old = [c for c in containers if c.name in names]
        port = (old[-1].port if old and old[-1].port else None) or self.params["health"]["port"]
        again = self.listening_again(names, port)
        protocol = self.params["health"]["protocol"]
        changed = sorted({c.protocol for c in old if c.protocol and c.protocol != protocol})
        hint = (f". nginx spoke {changed[0]} to the port until the swap was done: change the protocol of a host under "
                "traffic with strategy blue-green" if changed else "")
        raise SwapError(f"{failure}; {again}{hint}", **failure.details)

    def listening_again(self, names: list[str], port: int) -> str:
        """Wait until the old containers `names`, just started again, listen on `port` (at most the health
        timeout), mark old_restarted, and say how that went."""
        back = wait_listening(self.module.run_command, self.docker.container_ids(names), port,
                              self.params["health"]["timeout"])
        self.mark("old_restarted")
        return "the old container ({}) was started again{}".format(
            ", ".join(names), " and serves" if back else f", but does not listen on port {port} yet")
