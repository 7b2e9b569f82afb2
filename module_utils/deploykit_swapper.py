"""The swap on one host, for library/deploykit_swap.py (Swapper.run): converge what an interrupted swap left, refuse
what cannot work (a protocol change on one port, a port held by another process), start the new container, gate
it, let the strategy deal with the old ones, then record the release in the host's state file and prune old
images. Each step's time is marked (Swapper.mark: the timings returned, and the progress file)."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Literal, TextIO

from ansible.module_utils.deploykit_containers import (
    Container,
    Docker,
    SwapError,
    container_name,
    docker_run_argv,
    spec_hash,
)
from ansible.module_utils.deploykit_drain import Drain, Held
from ansible.module_utils.deploykit_gate import Gate
from ansible.module_utils.deploykit_host import HostBusy, exclusive, foreign_listeners
from ansible.module_utils.deploykit_strategies import STRATEGIES


class Swapper:
    def __init__(self, module: Any) -> None:
        self.module = module
        self.params = module.params
        self.docker = Docker(module, self.params)
        self.health = Gate(self.docker, self.params)
        self.start = time.monotonic()
        self.started_at = time.time()
        self.timings: dict[str, float] = {}
        self.progress: TextIO | Literal[False] | None = None  # the progress file, opened (truncated) at the first step
        self.drain = Drain(module, self.docker, self.params, self.mark, self.timings)
        self.strategy = STRATEGIES[self.params["strategy"]](self.params, self.docker, self.drain, self.mark)

    def progress_path(self) -> str:
        return str(self.params["progress_file"] or f"/run/deploykit/{self.params['app']}.progress")

    def mark(self, step: str, **details: Any) -> None:
        """Note the seconds since the start of the swap at `step`, in the timings and in the progress file."""
        self.timings[step] = round(time.monotonic() - self.start, 3)
        if self.progress is False:  # it could not be opened: warned once
            return
        try:
            if self.progress is None:
                path = self.progress_path()
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self.progress = open(path, "w")  # noqa: SIM115 - open for the whole swap (its process)
            self.progress.write(json.dumps(dict(step=step, at=self.timings[step], **details)) + "\n")
            self.progress.flush()
        except OSError as exc:  # the progress file is for watching a swap: it never stops one
            if self.progress is None:
                self.progress = False
                self.module.warn(f"no progress file: {exc}")

    def gate(self, name: str, port: int, olds: dict[str, str]) -> tuple[int, str, Held]:
        """The new container's whole gate: `successes` healthy answers in a row (mark ready), then its restart
        policy, then the settle window (mark healthy). Meanwhile the running `olds` ({name: restart policy})
        are readied for a quick stop (see Drain.hold). On failure the new container is removed and the olds keep
        serving as they were. Returns (probes sent, its restart count, what hold returned)."""
        try:
            attempts = self.health.health_gate(name, port)
        except SwapError:
            self.drain.stop_and_remove(name)  # gracefully: its queued connections move back to the old one
            raise
        self.mark("ready")
        rc, out, err = self.docker.set_restart(self.params["restart_policy"], name)
        running, restarts = self.docker.state(name)
        if rc != 0 and running:
            self.drain.stop_and_remove(name)
            raise SwapError(f"docker update of the new container {name} failed: {(err or out).strip()}")
        held = self.drain.hold(olds, port)
        try:  # an exit (rc != 0 above) is reported here
            self.health.settle(name, port, restarts, lambda: time.monotonic() - self.start - self.timings["ready"])
        except SwapError:
            self.drain.release(held, olds)
            raise
        self.mark("healthy")
        return attempts, restarts, held

    def record(self, name: str) -> list[dict[str, Any]]:
        """Add the release to the host's state file (params["state_file"]), in place of an earlier record of it by
        this app: this app's history of releases, oldest first (a host may run several apps; a record without an
        app, from before, counts as this app's)."""
        path, app = self.params["state_file"], self.params["app"]
        history = []
        if os.path.exists(path):
            with open(path) as handle:
                history = json.load(handle)
        history = [h for h in history if h.get("release") != self.params["release"] or h.get("app", app) != app]
        history.append({"app": app, "release": self.params["release"], "image": self.params["image"],
                        "container": name, "variant": self.params["env"].get("DEPLOYKIT_VARIANT", ""),
                        "at": int(time.time())})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = path + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(history, handle, indent=1)
        os.rename(temporary, path)
        return [h for h in history if h.get("app", app) == app]

    def prune_images(self, history: list[dict[str, Any]]) -> list[str]:
        """Remove the app's images but those of the last keep_releases releases."""
        removed: list[str] = self.docker.prune_images(set(h["image"] for h in history[-self.params["keep_releases"]:]))
        return removed

    def converge(self, serving: Container, containers: list[Container], others: list[str]) -> dict[str, Any]:
        """An interrupted swap left extra containers (`others`) beside the one already serving this release and
        settings: gate it if it still lacks its restart policy, then retire the others."""
        if serving.restart == "no" and not self.module.check_mode:
            # still without its restart policy: the swap stopped before or during the gate; gate it now
            self.gate(serving.name, serving.port or self.params["health"]["port"], {})
        running_others = [c.name for c in containers if c.running and c.name in others]
        if self.strategy.caller_retires and running_others:  # nginx may still point at them: caller retires
            return dict(changed=True, container=serving.name, stopped=[], retire=running_others,
                        port=serving.port, converged=True)
        if not self.module.check_mode:
            for other in others:
                self.drain.stop_and_remove(other)
        return dict(changed=True, container=serving.name, stopped=others, retire=[], port=serving.port,
                    converged=True)

    def refuse_protocol_change(self, containers: list[Container]) -> None:
        """One port cannot change what it speaks: nginx would send the old protocol to the new container."""
        protocol = self.params["health"]["protocol"]
        speaking_other = [c.name for c in containers if c.running and c.protocol and c.protocol != protocol]
        if self.strategy.shares_port and speaking_other:
            spoken = next(c.protocol for c in containers if c.name == speaking_other[0])
            raise SwapError(f"cannot swap on one port from a server speaking {spoken} ({', '.join(speaking_other)}) "
                            f"to one speaking {protocol}: nginx would send the old protocol to the new container. "
                            "Deploy this change with strategy recreate or blue-green.")

    def run(self) -> dict[str, Any]:
        """The swap, once no other swap of the app runs on this host. A deploy stopped mid-swap (its controller
        killed) leaves its swap module running here until it ends by itself; the next deploy's swap waits for it
        (at most its gate, its old containers' stop and two minutes), then converges what it left."""
        lock = os.path.join(os.path.dirname(self.progress_path()), f"{self.params['app']}.swap.lock")
        bound = self.params["health"]["timeout"] + self.params["stop_timeout"] + 120
        try:
            with exclusive(lock, bound) as waited:
                if waited >= 0.5:
                    self.module.warn(f"waited {waited:.1f} s for another swap of {self.params['app']} on this host "
                                     "to end (a deploy stopped mid-swap leaves its swap running)")
                return self.swap()
        except HostBusy as exc:
            raise SwapError(f"another swap of {self.params['app']} is still running on this host: {exc}; nothing "
                            "was changed") from exc

    def swap(self) -> dict[str, Any]:
        p = self.params
        digest = spec_hash(p, self.docker.image_id())
        name = container_name(p["app"], p["release"], digest)
        containers = self.docker.app_containers()
        current = [c for c in containers if c.running and c.spec == digest]
        others = [c.name for c in containers if not (c.running and c.spec == digest)]
        serving = current[0] if current else None
        if serving and not others:
            return dict(changed=False, container=serving.name, stopped=[], retire=[], port=serving.port)
        if serving:
            return self.converge(serving, containers, others)
        self.refuse_protocol_change(containers)
        port = self.strategy.listen_port(containers)
        foreign = foreign_listeners(self.module.run_command, port, self.docker.container_ids)
        if foreign:
            raise SwapError(f"port {port} is in use by {', '.join(foreign)}, not by a container of {p['app']}: nothing "
                            "was changed. Stop that process, or give the app another port (app_port)")
        if self.module.check_mode:
            return dict(changed=True, container=name, stopped=others, retire=[], port=port)
        stale = [c.name for c in containers if c.name == name]
        for old in stale:  # a leftover of the same name, not running: clear it
            self.docker.force_remove(old)
        olds = [c for c in others if c not in stale]
        running = {c.name: c.restart for c in containers if c.running and c.name in olds}
        self.strategy.before_start(running)
        try:
            self.docker(*docker_run_argv(p, name, digest, port)[1:])
            self.mark("started", container=name)
            attempts, restarts, held = self.gate(name, port, self.strategy.held_during_gate(running))
        except SwapError as exc:
            self.strategy.on_failure(name, running, containers, exc)
            raise
        retire = self.strategy.after_gate(name, olds, running, port, held, restarts)
        history = self.record(name)
        pruned = self.prune_images(history)
        return dict(changed=True, container=name, stopped=[o for o in olds if o not in retire], retire=retire,
                    port=port, timings=self.timings, health_attempts=attempts, pruned_images=pruned,
                    started_at=round(self.started_at, 3))
