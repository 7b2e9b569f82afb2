"""What a host runs, as library/deploykit_app_info.py reads it (provisioning rewrites each app's nginx file from
it), run as Ansible runs it against this machine's own Docker engine, with containers of the test's own labelled
as deploykit_swap and the app role label theirs."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import run_module

UTILS = ("deploykit_host", "deploykit_containers")


@pytest.fixture
def two_apps(docker_client):
    """Two apps' containers (one of them with an older, stopped one), sleeping: names made for this test."""
    image = next(i for i in docker_client.images.list() if i.tags).tags[0]
    tag = uuid.uuid4().hex[:6]
    apps = {f"test-{tag}-a": "8100", f"test-{tag}-b": "8200"}
    made = []
    for app, port in apps.items():
        for release, running in (("1.0", False), ("1.1", True)):
            labels = {"io.deploykit.app": app, "io.deploykit.release": release, "io.deploykit.port": port,
                      "io.deploykit.protocol": "http", "io.deploykit.server_names": f"{app}.lab",
                      "io.deploykit.health_path": "/health",
                      "io.deploykit.tls": json.dumps({"certificate": "/c.pem", "key": "/k.pem", "hsts_max_age": 0})}
            container = docker_client.containers.create(image, ["sleep", "300"], name=f"{app}-{release}",
                                                        labels=labels, entrypoint=[])
            made.append(container)
            if running:
                container.start()
    yield apps
    for container in made:
        container.remove(force=True)


def test_without_an_app_it_lists_every_app_the_host_runs_with_what_it_serves(two_apps):
    listed = {app["app"]: app for app in run_module("deploykit_app_info", {}, UTILS)["apps"]}
    for app, port in two_apps.items():
        serving = listed[app]
        assert (serving["release"], serving["port"], serving["running"]) == ("1.1", int(port), True), serving
        assert serving["server_names"] == [f"{app}.lab"] and serving["tls"]["certificate"] == "/c.pem"


def test_with_an_app_it_lists_that_apps_containers_oldest_first(two_apps):
    app = next(iter(two_apps))
    result = run_module("deploykit_app_info", {"app": app}, UTILS)
    assert [(c["release"], c["running"]) for c in result["containers"]] == [("1.0", False), ("1.1", True)]
    assert result["serving"]["name"] == f"{app}-1.1" and "apps" not in result
