"""Blue-green's retire in one call (module_utils/deploykit_retire.py, library/deploykit_retire.py), run as Ansible
runs it, against this machine's real Docker engine; with nginx's old workers, on a lab host: tests/test_swap_faults.py
(blue-green)."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from conftest import run_module as run_conftest_module

UTILS = ("deploykit_host", "deploykit_containers", "deploykit_retire")


def run_module(args: dict, check_mode: bool = False) -> dict:
    return run_conftest_module("deploykit_retire", args, UTILS, check_mode)


@pytest.fixture
def old_containers(docker_client):
    """Two running containers of the bootstrap's base image, stopped by SIGTERM at once (sleep as PID 1 would
    ignore it: `docker stop` would wait its timeout)."""
    base = docker_client.images.list("deploykit/debian")[0]
    prefix = f"retiretest-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}-{i}" for i in (1, 2)]
    for name in names:
        docker_client.containers.run(base.id, ["sh", "-c", "trap 'exit 0' TERM; sleep 60 & wait"], name=name,
                                     entrypoint=[], detach=True)
    yield names
    for container in docker_client.containers.list(all=True, filters={"name": prefix}):
        container.remove(force=True)


def exists(docker_client, name: str) -> bool:
    return bool(docker_client.containers.list(all=True, filters={"name": f"^/{name}$"}))


def test_check_mode_names_the_containers_and_changes_nothing(old_containers, docker_client):
    shown = run_module({"containers": [*old_containers, "retiretest-never-there"], "stop_timeout": 5}, check_mode=True)
    assert (shown["changed"], shown["retired"]) == (True, old_containers), shown
    assert all(exists(docker_client, name) for name in old_containers)


def test_the_old_containers_are_stopped_and_removed_after_nginx_old_workers_are_gone(old_containers, docker_client):
    # a process named as nginx names a worker of the configuration it reloaded away from, for 3 s
    worker = subprocess.Popen(["bash", "-c", "exec -a 'nginx: worker process is shutting down' sleep 3"])
    try:
        done = run_module({"containers": old_containers, "stop_timeout": 5, "nginx_wait": 20})
        assert (done["changed"], done["retired"]) == (True, old_containers), done
        assert done["waited"] >= 1.5 and worker.poll() is not None, done  # it waited for the worker to be gone
    finally:
        worker.kill()
    assert not any(exists(docker_client, name) for name in old_containers)
    # a run again (the containers gone already) changes nothing and does not fail
    again = run_module({"containers": old_containers, "stop_timeout": 5})
    assert (again["changed"], again["retired"], again.get("failed", False)) == (False, [], False), again


def test_the_wait_for_nginx_old_workers_is_bounded(old_containers, docker_client):
    worker = subprocess.Popen(["bash", "-c", "exec -a 'nginx: worker process is shutting down' sleep 30"])
    try:
        done = run_module({"containers": old_containers[:1], "stop_timeout": 5, "nginx_wait": 1})
        assert done["retired"] == old_containers[:1] and 1.0 <= done["waited"] < 10, done  # not the worker's 30 s
    finally:
        worker.kill()
    assert not exists(docker_client, old_containers[0]) and exists(docker_client, old_containers[1])


def test_bad_values_are_refused_before_anything_is_done(old_containers, docker_client):
    refused = run_module({"containers": old_containers, "stop_timeout": -1})
    assert refused["failed"] and "must not be negative" in refused["msg"], refused
    assert all(exists(docker_client, name) for name in old_containers)
