"""When/Then on the lab fleet: two apps on the same hosts, each in a slot of its own (deploykit.yml server.port).

- When the Flask and the Django examples are deployed with ports and names of their own, then both answer through
  the one nginx of each host, each by its names, from containers deploykit-flask-demo and deploykit-django-demo.
- When one is deployed again (with its smoke benchmark) and rolled back while both are under load, then the other
  fails no request and its container is the same one; maintenance mode for one leaves the other serving; a
  provision keeps both.
"""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import DJANGO_DIR, FLASK_DIR, NO_CHECKS, deploy
from weblab import Load, describe, dropped

pytestmark = pytest.mark.lab

APPS = {"flask": (FLASK_DIR, 8100, "flask.lab"), "django": (DJANGO_DIR, 8200, "django.lab")}


@pytest.fixture(scope="module")
def apps(provisioned_fleet, test_release, test_release_b, tmp_path_factory):
    """Both examples, each with a port and a name of its own, deployed to every host; removed at the end."""
    fleet = provisioned_fleet[0]
    folders = {}
    for key, (source, port, name) in APPS.items():
        folder = tmp_path_factory.mktemp(key) / source.name
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__"))
        text = (folder / "deploykit.yml").read_text()
        text = text.replace("names: [demo.lab, localhost, 127.0.0.1]", f"names: [{name}]")
        text = text.replace("  health_path: /health", f"  port: {port}\n  health_path: /health")
        (folder / "deploykit.yml").write_text(text)
        folders[key] = folder
        deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--project", str(folder), "--version", test_release)
    yield fleet, folders
    for host in fleet.hosts:  # the next modules' tests know one app per host
        fleet.ssh(host, "sudo docker rm -f $(sudo docker ps -aq --filter label=io.deploykit.app=deploykit-flask-demo "
                        "--filter label=io.deploykit.app=deploykit-django-demo) >/dev/null 2>&1; "
                        "sudo rm -f /etc/nginx/deploykit.d/deploykit-flask-demo.conf "
                        "/etc/nginx/deploykit.d/deploykit-django-demo.conf; sudo nginx -s reload; true")


def answer(fleet, host, name: str, path: str = "/health") -> tuple[int, dict]:
    out = fleet.ssh(host, f"curl -s -m 5 -w '\\n%{{http_code}}' -H 'Host: {name}' http://127.0.0.1{path}")
    body, _, status = out.rpartition("\n")
    return int(status), (json.loads(body) if body.startswith("{") else {"body": body})


def containers(fleet, host, app: str) -> list[str]:
    return fleet.ssh(host, f"sudo docker ps --filter label=io.deploykit.app={app} --format '{{{{.ID}}}}'").split()


def test_each_app_answers_its_own_names_from_its_own_slot(apps, test_release):
    fleet, _ = apps
    for host in fleet.hosts:
        (flask_status, flask), (django_status, django) = answer(fleet, host, "flask.lab"), answer(fleet, host,
                                                                                                  "django.lab")
        assert flask_status == django_status == 200
        assert (flask["app"], flask["release"]) == ("flask", test_release), flask
        assert (django["app"], django["release"]) == ("django", test_release), django
        assert len(containers(fleet, host, "deploykit-flask-demo")) == 1
        assert len(containers(fleet, host, "deploykit-django-demo")) == 1
        files = fleet.ssh(host, "ls /etc/nginx/deploykit.d").split()
        assert {"deploykit-flask-demo.conf", "deploykit-django-demo.conf"} <= set(files)
        listening = fleet.ssh(host, "sudo ss -Hltn '( sport = :8100 or sport = :8200 )'")
        assert ":8100" in listening and ":8200" in listening


def test_deploying_and_rolling_back_one_app_never_touches_the_other(apps, test_release, test_release_b):
    fleet, folders = apps
    before = {host["name"]: containers(fleet, host, "deploykit-django-demo") for host in fleet.hosts}
    # 40 req/s per host and app: both loaded through the swap, without the two loads alone taking this machine's
    # two cores from the six containers (at the other tests' 150 the test took 145 s)
    flask_load = Load(fleet.hosts, host_header="flask.lab", rate=40)
    django_load = Load(fleet.hosts, host_header="django.lab", rate=40)
    try:
        # with its smoke benchmark (wrk on every host, through nginx, for flask.lab): benchmarking one app is part
        # of what must leave the other alone
        report = json.loads(deploy("-i", str(fleet.inventory), "--project", str(folders["flask"]), "--version",
                                   test_release_b, "--no-swap-report", "--gate-failures-only", "--smoke-duration", "2",
                                   "--json").stdout)
        deploy("rollback", *NO_CHECKS, "-i", str(fleet.inventory), "--project", str(folders["flask"]))
    finally:
        flask_counts, django_counts = flask_load.finish(), django_load.finish()
    print(f"flask.lab (deployed, rolled back): {describe(flask_counts)}")
    print(f"django.lab (untouched): {describe(django_counts)}")
    assert dropped(flask_counts) == 0, describe(flask_counts)  # the swapped app's own swaps: 0 failed
    # the untouched app loses nothing; a request slower than the client's 10 s (the machine's two cores busy with
    # the other app's new containers and its smoke benchmark) is slow, not lost, as in every lab test (dropped)
    assert dropped(django_counts) == 0 and django_counts["requests"] > 1000, describe(django_counts)
    assert sorted(report["smoke"]["hosts"]) == sorted(host["name"] for host in fleet.hosts)
    assert all(result["failed"] == 0 and result["rps"] > 0 for result in report["smoke"]["hosts"].values())
    for host in fleet.hosts:
        assert containers(fleet, host, "deploykit-django-demo") == before[host["name"]]  # the same container
        assert answer(fleet, host, "flask.lab")[1]["release"] == test_release  # rolled back
        assert answer(fleet, host, "django.lab")[1]["release"] == test_release


def test_maintenance_of_one_app_leaves_the_other_serving_and_a_provision_keeps_both(apps):
    fleet, folders = apps
    try:
        deploy("maintenance", "on", "-i", str(fleet.inventory), "--project", str(folders["flask"]))
        for host in fleet.hosts:
            assert answer(fleet, host, "flask.lab", "/")[0] == 503
            assert answer(fleet, host, "flask.lab")[0] == 200  # its health path passes
            assert answer(fleet, host, "django.lab", "/")[0] == 200
    finally:
        deploy("maintenance", "off", "-i", str(fleet.inventory), "--project", str(folders["flask"]))
    deploy("provision", "-i", str(fleet.inventory))
    for host in fleet.hosts:
        assert answer(fleet, host, "flask.lab", "/")[0] == 200
        assert answer(fleet, host, "django.lab", "/")[0] == 200
