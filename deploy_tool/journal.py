"""The controller's record of deploys: a lock per inventory, and an audit log of every deploy and rollback.

The lock (.deploykit/locks/<inventory>.lock) holds who took it; takers go one at a time. A lock whose process no
longer runs on this controller is stale (a deploy that was killed): it is taken over, and the takeover is said.
The audit log (.deploykit/audit.log) has one JSON line per deploy or rollback, written here and read here: what
is deployed, and what a rollback returns to.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_tool.errors import DeployError
from deploy_tool.inventory import inventory_slug
from deploy_tool.project import Project

log = logging.getLogger(__name__)


def lock_path(project: Project, inventory: Path) -> Path:
    """The lock of an inventory's fleet, keyed by its directory: `-i inv` and `-i inv/hosts.yml` are one fleet."""
    directory = inventory.parent if inventory.is_file() else inventory
    return project.state_dir / "locks" / f"{inventory_slug(directory)}.lock"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or no pid at all (a number too large)
        return False
    except PermissionError:
        return True
    return True


@dataclass
class DeployLock:
    path: Path
    holder: dict[str, Any]
    nested: bool = False  # taken again by the process holding it (a gate's rollback): released by the outer
    stale_token: str = ""  # the fleet-lock token of a stale lock taken over: its process is gone (see fleetlock)

    @property
    def token(self) -> str:
        """This deploy's token, for the fleet's lock too (deploy_tool/fleetlock.py)."""
        return str(self.holder.get("token", ""))

    @classmethod
    def acquire(cls, project: Project, inventory: Path, action: str, version: str,
                nested: bool = False) -> DeployLock:
        """Take the inventory's lock. nested: this process may hold it already (a gate's rollback inside its
        deploy); that inner hold does not release it. Atomic: takers on this controller go one at a time (an
        flock on the locks folder), and the lock file appears whole (written aside, then renamed in)."""
        path = lock_path(project, inventory)
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
                  "action": action, "version": version, "inventory": str(inventory), "since": int(time.time()),
                  "token": uuid.uuid4().hex}
        with open(path.parent / ".guard", "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            current = cls._read(path)
            pid = current.get("pid") if current else None
            alive = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and process_alive(pid)
            if alive and current is not None:
                if nested and pid == os.getpid():  # the outer hold's stale token too: its first playbook may be ours
                    return cls(path, current, nested=True, stale_token=str(current.get("stale_token") or ""))
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(current.get("since", 0)))
                raise DeployError(
                    f"another deploy holds the lock of {inventory}: {current.get('user')}@{current.get('host')} "
                    f"(pid {pid}) running {current.get('action')} {current.get('version')} since {since}",
                    hint=f"wait for it to finish; if that process is gone, remove {path}")
            if path.exists():
                log.warning("taking over a stale deploy lock (%s, pid %s no longer runs)",
                            current.get("action") if current else "unreadable", pid)
            stale_token = str((current or {}).get("token") or "")
            holder["stale_token"] = stale_token
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            partial.write_text(json.dumps(holder), encoding="utf-8")
            os.replace(partial, path)
        return cls(path, holder, stale_token=stale_token)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None  # a file cut short or edited: no holder

    def release(self) -> None:
        if self.nested:
            return
        current = self._read(self.path)
        if current and current.get("pid") == self.holder["pid"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> DeployLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def audit_path(project: Project) -> Path:
    return project.state_dir / "audit.log"


def without_invocations(value: Any) -> Any:
    """A module's result without its `invocation` (the arguments it was called with: a container's whole
    environment), at any depth: the audit log keeps what happened, not how it was asked."""
    if isinstance(value, dict):
        return {key: without_invocations(item) for key, item in value.items() if key != "invocation"}
    if isinstance(value, list):
        return [without_invocations(item) for item in value]
    return value


def audit(project: Project, entry: dict[str, Any]) -> Path:
    """Append one JSON line to .deploykit/audit.log (0600, in a 0700 folder), flushed to disk."""
    path = audit_path(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    record = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "user": getpass.getuser(), **without_invocations(entry)}
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a file of one per line; a damaged line (a write cut short, an edit) is skipped with
    a warning naming the file and the line, never a traceback."""
    if not path.exists():
        return []
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if isinstance(value, dict):
            found.append(value)
        else:
            log.warning("%s line %d is damaged (not a JSON object): skipped", path, number)
    return found


# -- reading the audit log: what was deployed, what a rollback returns to ----------------------------------
def audited_releases(project: Project, inventory: Path, app: str | None = None) -> list[dict[str, Any]]:
    """Deploys and rollbacks of an inventory (of `app` only, when given), whatever their result, oldest first,
    from the audit log (benchmark matrix deploys are not among them)."""
    fields = ("version", "variant", "app")  # what a rollback needs of an entry
    return [entry for entry in json_lines(audit_path(project))
            if entry.get("inventory") == str(inventory) and entry.get("action", "deploy") in ("deploy", "rollback")
            and app in (None, entry.get("app")) and all(isinstance(entry.get(name), str) for name in fields)]


def deployed_releases(project: Project, inventory: Path, app: str | None = None) -> list[dict[str, Any]]:
    """The successful deploys and rollbacks among them (releases that failed their gate are not)."""
    return [entry for entry in audited_releases(project, inventory, app) if entry.get("result") == "ok"]


def swapped_in(entry: dict[str, Any]) -> bool:
    """Whether a deploy that did not succeed may have left its release running on a host: its swap succeeded
    somewhere, its gate failed after the swap, or it was interrupted (where it stopped is not known)."""
    if entry.get("result") == "ok":
        return True
    if entry.get("result") in ("regressed", "interrupted") or entry.get("live_hosts"):
        return True
    hosts = entry.get("hosts")
    return isinstance(hosts, dict) and any(isinstance(result, dict) and result.get("container")
                                           and not result.get("failed") for result in hosts.values())


def current_release(project: Project, inventory: Path, app: str | None = None) -> dict[str, Any] | None:
    deployed = deployed_releases(project, inventory, app)
    return deployed[-1] if deployed else None


def host_releases(project: Project, inventory: Path, app: str | None = None) -> dict[str, dict[str, Any]]:
    """{host: {release, variant, app, at}}: what each host runs by the audit log, the last successful deploy or
    rollback (of `app`, when given) that reached it (a --limit deploy or a canary batch reaches some hosts only)."""
    serving: dict[str, dict[str, Any]] = {}
    for entry in deployed_releases(project, inventory, app):
        for host in entry.get("hosts") or {}:
            serving[host] = {"release": entry["version"], "variant": entry["variant"], "app": entry["app"],
                             "at": entry.get("at")}
    return serving


def previous_release(project: Project, inventory: Path, to: str | None = None,
                     app: str | None = None) -> dict[str, Any]:
    """The release a rollback returns to (of `app`, when given), from the audit log: `to`'s last successful
    deploy; else, when a deploy or rollback after the last successful one may have left its release on some
    hosts (a partial rollout, a regression left deployed, an interruption), the fleet goes back to that last good
    release (or a rollback cut short is done again); else the release deployed successfully before the current
    one. The entry returned says why in `reason`."""
    audited = audited_releases(project, inventory, app)
    deployed = [entry for entry in audited if entry.get("result") == "ok"]
    if not deployed:
        raise DeployError(f"no release was deployed to {inventory} from this controller: nothing to roll back to",
                          hint="deploy a release first; the audit log is .deploykit/audit.log")
    current = deployed[-1]
    if to is not None:
        matches = [e for e in deployed if e["version"] == to]
        if not matches:
            known = sorted({e["version"] for e in deployed})
            raise DeployError(f"release {to} was never deployed to {inventory}",
                              hint=f"releases deployed there: {', '.join(known)}")
        return {**matches[-1], "reason": "asked for"}
    after = audited[len(audited) - audited[::-1].index(current):]
    unfinished = [entry for entry in after if swapped_in(entry)]
    if unfinished:
        last = unfinished[-1]
        if last.get("action") == "rollback":
            return {**last, "reason": f"the rollback to {last['version']} at {last.get('at', '?')} did not finish"}
        return {**current, "reason": f"{last.get('action', 'deploy')} of {last['version']} at {last.get('at', '?')} "
                                     f"ended {last.get('result')} and may be live on some hosts: back to the last "
                                     "good release"}
    earlier = [e for e in deployed if e["version"] != current["version"]]
    if not earlier:
        raise DeployError(f"{inventory} has had only release {current['version']}: there is no previous release",
                          hint="roll back after a second release was deployed, or name one with --to")
    return {**earlier[-1], "reason": f"the release before {current['version']}"}
