"""The controller's record of deploys: a lock per inventory, and an audit log of every deploy and rollback.

The lock is a file created exclusively (.deploykit/locks/<inventory>.lock) holding who took it. A lock whose
process no longer runs on this controller is stale (a deploy that was killed): it is taken over, and the
takeover is said. The audit log (.deploykit/audit.log) has one JSON line per deploy or rollback.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_tool.errors import DeployError
from deploy_tool.project import Project

log = logging.getLogger(__name__)


def inventory_slug(inventory: Path) -> str:
    digest = hashlib.sha256(str(inventory.resolve()).encode()).hexdigest()[:10]
    return f"{inventory.stem}-{digest}"


def lock_path(project: Project, inventory: Path) -> Path:
    """The lock of an inventory's fleet, keyed by its directory: `-i inv` and `-i inv/hosts.yml` are one fleet."""
    directory = inventory if inventory.is_dir() or not inventory.suffix else inventory.parent
    return project.state_dir / "locks" / f"{inventory_slug(directory)}.lock"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class DeployLock:
    path: Path
    holder: dict[str, Any]
    nested: bool = False  # taken again by the process holding it (a gate's rollback): released by the outer

    @classmethod
    def acquire(cls, project: Project, inventory: Path, action: str, version: str,
                nested: bool = False) -> DeployLock:
        """Take the inventory's lock. nested: this process may hold it already (a gate's rollback inside its
        deploy); that inner hold does not release it. Atomic: takers on this controller go one at a time (an
        flock on the locks folder), and the lock file appears whole (written aside, then renamed in)."""
        path = lock_path(project, inventory)
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
                  "action": action, "version": version, "inventory": str(inventory), "since": int(time.time())}
        with open(path.parent / ".guard", "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            current = cls._read(path)
            pid = current.get("pid") if current else None
            alive = isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and process_alive(pid)
            if alive and current is not None:
                if nested and pid == os.getpid():
                    return cls(path, current, nested=True)
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(current.get("since", 0)))
                raise DeployError(
                    f"another deploy holds the lock of {inventory}: {current.get('user')}@{current.get('host')} "
                    f"(pid {pid}) running {current.get('action')} {current.get('version')} since {since}",
                    hint=f"wait for it to finish; if that process is gone, remove {path}")
            if path.exists():
                log.warning("taking over a stale deploy lock (%s, pid %s no longer runs)",
                            current.get("action") if current else "unreadable", pid)
            partial = path.with_name(f".{path.name}.{os.getpid()}")
            partial.write_text(json.dumps(holder), encoding="utf-8")
            os.replace(partial, path)
        return cls(path, holder)

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
