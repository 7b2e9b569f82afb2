"""The fleet's deploy lock, kept on a host of the fleet (the first web host), for library/deploykit_lock.py.

A lock is a JSON file: who holds it (`holder`: user, controller, pid, command), its `token` (one per deploy, so
that the holder's own later playbooks renew it), `since`, and `expires` (a lease, renewed by every playbook of
the deploy). It is taken when there is none, when its lease has expired, when the taker holds it already (the
same token), or when the taker names its token as stale (`stale_token`: the controller that took it knows its
process is gone). Every change happens under an flock on a guard file beside it, and the file is written aside,
fsynced and renamed in: two takers never both win, and a reader never sees half a lock. Times are the host's
clock, the only clock that judges the lease. No Ansible in here: tests/test_swap_module.py uses it as is."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from typing import Any


class LockHeld(Exception):
    """Another deploy holds the lock; `lock` is what it says."""

    def __init__(self, lock: dict[str, Any]) -> None:
        super().__init__(describe(lock))
        self.lock = lock


def describe(lock: dict[str, Any], now: float | None = None) -> str:
    holder = lock.get("holder") or {}
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(lock.get("since", 0))))
    left = float(lock.get("expires", 0)) - (time.time() if now is None else now)
    return (f"{holder.get('user', '?')}@{holder.get('controller', '?')} (pid {holder.get('pid', '?')}) running "
            f"{holder.get('command', '?')} since {since}; its lease ends in {max(0, int(left))} s")


@contextlib.contextmanager
def guarded(path: str) -> Iterator[None]:
    """Exclusive: one change of the lock at a time on this host. The lock's own folder is 0700; folders made
    above it are not (others' files live there: nginx reads the static files under /var/lib/deploykit)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)  # the mode applies to the last folder only
    with open(path + ".guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


def read(path: str) -> dict[str, Any] | None:
    """The lock, or None when there is none or it cannot be read (a file cut short is no lock)."""
    try:
        with open(path, encoding="utf-8") as stream:
            value = json.load(stream)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get("token") else None


def write(path: str, lock: dict[str, Any]) -> None:
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w", encoding="utf-8") as stream:
        json.dump(lock, stream)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(partial, 0o600)
    os.replace(partial, path)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def take(path: str, token: str, holder: dict[str, Any], lease: float, stale_token: str = "",
         now: float | None = None) -> tuple[dict[str, Any], str]:
    """Take or renew the lock. Returns (the lock now, what happened: taken, renewed, or taken over from a stale
    or expired one); raises LockHeld when another deploy holds it."""
    now = time.time() if now is None else now
    with guarded(path):
        current = read(path)
        if current is None:
            how = "taken"
        elif current["token"] == token:
            how = "renewed"
        elif stale_token and current["token"] == stale_token:
            how = "taken over from a stale lock: " + describe(current, now)
        elif float(current.get("expires", 0)) <= now:
            how = "taken over from an expired lock: " + describe(current, now)
        else:
            raise LockHeld(current)
        lock = {"token": token, "holder": holder,
                "since": current["since"] if current is not None and how == "renewed" else now,
                "expires": now + lease}
        write(path, lock)
        return lock, how


def release(path: str, token: str = "", force: bool = False) -> dict[str, Any] | None:
    """Release the lock held with `token` (or any, with force). Returns the lock released, or None when there was
    none of this token's to release (another deploy's lock is left as it is)."""
    with guarded(path):
        current = read(path)
        if current is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # an unreadable file is no lock
            return None
        if not force and current["token"] != token:
            return None
        os.unlink(path)
        return current
