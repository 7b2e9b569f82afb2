"""The fleet's deploy lock, kept on its first web host (library/deploykit_lock.py): deploys from different
controllers (a CI runner and a laptop) exclude each other, as the controller's own lock (journal.DeployLock)
excludes deploys from this one.

A deploy takes it in playbooks/deploy.yml's first task with its token (the local lock's), before any host is
changed; every batch renews its lease; it is released here (playbooks/lock.yml) when the deploy ends, however
it ends. A holder that died frees it when its lease runs out, or at once for the next deploy from the same
controller (whose local lock knows that process is gone). `deploy lock status` and `deploy lock release`."""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from deploy_tool.errors import DeployError
from deploy_tool.playbook import PlaybookFailed, PlaybookRun, ProgressCallback, run_playbook
from deploy_tool.project import Project

LEASE = 900  # seconds a deploy holds the fleet's lock without a renewal (each batch of the deploy renews it)
TAKE_TASK = "Take the fleet's deploy lock (on the first web host)"  # playbooks/deploy.yml


def controller() -> str:
    """This machine, as a lock's holder names it: its host name and machine id (containers share host names)."""
    try:
        machine = Path("/etc/machine-id").read_text(encoding="utf-8").strip()[:8]
    except OSError:
        machine = ""
    return f"{socket.gethostname()}{'/' + machine if machine else ''}"


def holder(action: str, version: str) -> dict[str, Any]:
    return {"user": getpass.getuser(), "controller": controller(), "pid": os.getpid(), "action": action,
            "version": version, "command": " ".join(["deploy", *sys.argv[1:]])[:300]}


def take_vars(token: str, who: dict[str, Any], stale_token: str = "") -> dict[str, Any]:
    """The deploy playbook's variables that make its first task take (or renew) the lock."""
    return {"deploykit_lock_token": token, "deploykit_lock_holder": who, "deploykit_lock_lease": LEASE,
            "deploykit_lock_stale_token": stale_token}


def _lock_run(inventory: Path, state: str, token: str = "", force: bool = False,
              like: PlaybookRun | None = None) -> PlaybookRun:
    """playbooks/lock.yml on the first web host; `like`: a deploy's run, whose vault settings it shares."""
    return PlaybookRun("lock.yml", inventory, extravars={
        "deploykit_lock_state": state, "deploykit_lock_token": token, "deploykit_lock_force": force},
        vars_files=like.vars_files if like else (), vault_password_file=like.vault_password_file if like else None,
        timeout=180, capture=("deploykit_lock",))


def _run(run: PlaybookRun, project: Project, emit: ProgressCallback) -> tuple[str, dict[str, Any]]:
    """(the lock host, the module's result)."""
    try:
        outcome = run_playbook(run, project, emit)
    except PlaybookFailed as exc:
        raise DeployError(f"the fleet's lock could not be read or changed: {exc.message}",
                          hint="the lock lives on the first host of the group web: it must be reachable") from exc
    if not outcome.results:
        raise DeployError(f"the inventory {run.inventory} has no host in the group web to keep the fleet's lock on")
    host, result = next(iter(outcome.results.items()))
    return host, result


def status(project: Project, inventory: Path, emit: ProgressCallback) -> tuple[str, dict[str, Any]]:
    """(the lock host, the lock or {} when none is held; with `expired` when its lease ran out)."""
    host, result = _run(_lock_run(inventory, "query"), project, emit)
    lock: dict[str, Any] = dict(result.get("lock") or {})
    if lock:  # judged by the host's clock, as the module judges the lease
        left = float(lock.get("expires", 0)) - float(result.get("now", time.time()))
        lock["expired"], lock["seconds_left"] = left <= 0, max(0, int(left))
    return host, lock


def release(project: Project, inventory: Path, emit: ProgressCallback, token: str = "", force: bool = False,
            like: PlaybookRun | None = None) -> tuple[str, dict[str, Any]]:
    """Release the lock held with `token` (or whoever holds it, with force). (the lock host, the lock released or
    {} when none was held)."""
    host, result = _run(_lock_run(inventory, "absent", token, force, like), project, emit)
    return host, dict(result.get("lock") or {})


def describe(lock: dict[str, Any]) -> str:
    who = lock.get("holder") or {}
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(lock.get("since", 0))))
    return (f"{who.get('user', '?')}@{who.get('controller', '?')} (pid {who.get('pid', '?')}) running "
            f"`{who.get('command', '?')}` since {since}")
