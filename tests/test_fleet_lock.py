"""The fleet's deploy lock (module_utils/deploykit_lock.py, library/deploykit_lock.py) on files of the test's own;
on a lab fleet, with deploys, in tests/test_faults_lab.py."""

from __future__ import annotations

import multiprocessing
import os
import stat
import sys

import pytest

from conftest import ROOT
from conftest import run_module as run_conftest_module

sys.path.insert(0, str(ROOT / "module_utils"))
import deploykit_lock as lock  # noqa: E402 - module_utils, as the module imports it on a host

WHO = {"user": "ops", "controller": "laptop/1234", "pid": 42, "command": "deploy --version 1.2.0"}


def test_a_lock_is_taken_renewed_by_its_token_and_refused_to_others(tmp_path):
    path = str(tmp_path / "state" / "fleet.lock")
    first, how = lock.take(path, "a" * 32, WHO, lease=60, now=1000.0)
    assert how == "taken" and first["since"] == 1000.0 and first["expires"] == 1060.0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    again, how = lock.take(path, "a" * 32, WHO, lease=60, now=1030.0)
    assert how == "renewed" and again["since"] == 1000.0 and again["expires"] == 1090.0
    with pytest.raises(lock.LockHeld) as held:
        lock.take(path, "b" * 32, {"user": "ci"}, lease=60, now=1080.0)
    assert "ops@laptop/1234 (pid 42) running deploy --version 1.2.0" in str(held.value)
    assert "its lease ends in 10 s" in lock.describe(held.value.lock, now=1080.0)
    assert lock.read(path)["token"] == "a" * 32  # unchanged by the refusal


def test_an_expired_or_stale_lock_is_taken_over_and_says_whose_it_was(tmp_path):
    path = str(tmp_path / "fleet.lock")
    lock.take(path, "a" * 32, WHO, lease=60, now=1000.0)
    taken, how = lock.take(path, "b" * 32, {"user": "ci"}, lease=60, now=1060.0)  # the lease ran out
    assert how.startswith("taken over from an expired lock: ops@laptop/1234") and taken["token"] == "b" * 32
    # the same controller knows its process died: it names that token, and takes the lock at once
    taken, how = lock.take(path, "c" * 32, WHO, lease=60, stale_token="b" * 32, now=1061.0)
    assert how.startswith("taken over from a stale lock: ci@") and taken["token"] == "c" * 32
    with pytest.raises(lock.LockHeld):  # a stale token that is not the holder's is no key
        lock.take(path, "d" * 32, WHO, lease=60, stale_token="b" * 32, now=1062.0)


def test_release_frees_only_its_own_lock_unless_forced_and_a_damaged_file_is_no_lock(tmp_path):
    path = str(tmp_path / "fleet.lock")
    lock.take(path, "a" * 32, WHO, lease=60)
    assert lock.release(path, "b" * 32) is None and lock.read(path)["token"] == "a" * 32
    assert lock.release(path, "a" * 32)["holder"] == WHO and lock.read(path) is None
    lock.take(path, "a" * 32, WHO, lease=60)
    assert lock.release(path, force=True)["token"] == "a" * 32
    for damaged in ("", "{", "[]", '{"holder": {}}'):
        (tmp_path / "fleet.lock").write_text(damaged)
        assert lock.read(path) is None
        assert lock.take(path, "e" * 32, WHO, lease=60)[1] == "taken"
        lock.release(path, "e" * 32)


def _take(path: str, token: str, start, results) -> None:
    start.wait()
    try:
        lock.take(path, token, {"pid": os.getpid()}, lease=60)
        results.put(token)
    except lock.LockHeld:
        results.put("")


def test_of_takers_at_the_same_moment_exactly_one_wins(tmp_path):
    path = str(tmp_path / "fleet.lock")
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    takers = [context.Process(target=_take, args=(path, f"{i:032d}", start, results)) for i in range(8)]
    for taker in takers:
        taker.start()
    start.set()
    for taker in takers:
        taker.join(30)
    won = [token for token in (results.get(timeout=5) for _ in takers) if token]
    assert len(won) == 1 and lock.read(path)["token"] == won[0]
    assert sorted(os.listdir(tmp_path)) == ["fleet.lock", "fleet.lock.guard"]  # nothing left half-written


def run_module(args: dict, check_mode: bool = False) -> dict:
    return run_conftest_module("deploykit_lock", args, ("deploykit_lock",), check_mode)


def test_the_module_takes_reads_refuses_and_releases(tmp_path):
    path = str(tmp_path / "fleet.lock")
    would = run_module({"path": path, "token": "a" * 32}, check_mode=True)
    assert would["changed"] is False and not os.path.exists(path)
    taken = run_module({"path": path, "token": "a" * 32, "holder": WHO, "lease": 120})
    assert taken["changed"] and taken["action"] == "taken" and taken["lock"]["holder"] == WHO
    refused = run_module({"path": path, "token": "b" * 32})
    assert refused["failed"] and refused["action"] == "refused"
    assert refused["msg"].startswith("another deploy holds the fleet's lock: ops@laptop/1234 (pid 42)")
    read = run_module({"path": path, "state": "query"})
    assert read["held"] and read["lock"]["token"] == "a" * 32 and read["now"] < read["lock"]["expires"]
    assert "releasing the lock needs its token" in run_module({"path": path, "state": "absent"})["msg"]
    released = run_module({"path": path, "state": "absent", "force": True})
    assert released["changed"] and released["action"] == "released" and not os.path.exists(path)


def test_only_the_locks_own_folder_is_private(tmp_path):
    """The folders made above it keep the usual mode: nginx must still reach the static files beside it (the first
    deploy on a fresh host made /var/lib/deploykit 0700, and nginx answered 404 for every static file)."""
    os.umask(0o022)
    lock.take(str(tmp_path / "var" / "lib" / "deploykit" / "lock" / "fleet.lock"), "a" * 32, WHO, lease=60)
    assert stat.S_IMODE(os.stat(tmp_path / "var" / "lib" / "deploykit").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "var" / "lib" / "deploykit" / "lock").st_mode) == 0o700
