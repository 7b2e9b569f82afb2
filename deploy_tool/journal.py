"""The controller's record of deploys: a lock per inventory, and an audit log of every deploy and rollback.

The lock is a file created exclusively (.deploykit/locks/<inventory>.lock) holding who took it. A lock whose
process no longer runs on this controller is stale (a deploy that was killed): it is taken over, and the
takeover is said. The audit log (.deploykit/audit.log) has one JSON line per deploy or rollback.
"""

from __future__ import annotations

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
        deploy); that inner hold does not release it."""
        path = project.state_dir / "locks" / f"{inventory_slug(inventory)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = {"user": getpass.getuser(), "host": socket.gethostname(), "pid": os.getpid(),
                  "action": action, "version": version, "inventory": str(inventory), "since": int(time.time())}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                current = cls._read(path)
                if nested and current and current.get("pid") == os.getpid():
                    return cls(path, current, nested=True)
                if current and process_alive(int(current.get("pid", 0))):
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(current.get("since", 0)))
                    raise DeployError(
                        f"another deploy holds the lock of {inventory}: {current.get('user')}@{current.get('host')} "
                        f"(pid {current.get('pid')}) running {current.get('action')} {current.get('version')} "
                        f"since {since}",
                        hint=f"wait for it to finish; if that process is gone, remove {path}") from None
                log.warning("taking over a stale deploy lock (%s, pid %s no longer runs)",
                            current.get("action") if current else "unreadable", current.get("pid") if current else "?")
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(holder, handle)
            return cls(path, holder)
        raise DeployError(f"could not take the deploy lock {path}", hint="remove it if no deploy runs")

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

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


def audit(project: Project, entry: dict[str, Any]) -> Path:
    """Append one JSON line to .deploykit/audit.log."""
    path = project.state_dir / "audit.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "user": getpass.getuser(), **entry}
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return path
