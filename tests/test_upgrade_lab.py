"""When/Then on the lab fleet: a rolling upgrade from Debian 12 to Debian 13, one host at a time, under load.

The lab has no load balancer in front of its hosts: the test is one. Each host in service has a load process of
its own (32 connections, 60 req/s, through the host's nginx); taking a host out of service is stopping its load
process first, putting one in is starting it. The procedure is docs/lab.md's ("A rolling upgrade to Debian 13"):

- When the last host is taken out, replaced by a Debian 13 host (`deploy lab up --debian 12,13`), provisioned
  with the database host (its pg_hba lists the web hosts by address), given the release the others serve and put
  back, then no request of the hosts in service failed meanwhile, and the new host serves the release on Debian 13.
- When the next release is deployed to the mixed fleet under load, then it swaps on both releases of Debian
  without a failed request.

It runs after the other modules that share the session's fleet but one (test_user_apps), which then deploys to the
mixed fleet.
"""

from __future__ import annotations

import json

import pytest

from conftest import FLASK, FLASK_IMAGE, NO_CHECKS, deploy
from weblab import Load, describe, dropped

pytestmark = pytest.mark.lab


def health(fleet, host) -> dict:
    return json.loads(fleet.ssh(host, "curl -s -m 5 -H 'Host: demo.lab' http://127.0.0.1/health"))


def debian(fleet, host) -> str:
    return fleet.ssh(host, ". /etc/os-release && echo $VERSION_ID").strip()


def release_deploy(fleet, release: str, *extra: str) -> None:
    deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", release, "--variant", "gunicorn-gthread", *FLASK,
           *extra)


def test_a_host_replaced_by_a_debian_13_host_under_load_then_a_deploy_to_the_mixed_fleet(
        provisioned_fleet, test_release, test_release_b):
    fleet = provisioned_fleet[0]
    fleet.serving("gunicorn-gthread", test_release, test_release_b)  # every host on Debian 12, test_release
    assert {debian(fleet, host) for host in fleet.hosts} == {"12"}
    *staying, leaving = fleet.hosts
    loads = {host["name"]: Load([host]) for host in staying}  # the leaving host is out of service
    counts: dict[str, dict] = {}
    try:
        up = json.loads(deploy("lab", "up", "--fleet", fleet.name, "--hosts", str(len(fleet.hosts)), "--debian",
                               ",".join(["12"] * len(staying) + ["13"]), "--json").stdout)
        fleet.hosts[:] = up["hosts"]  # the session's fleet, for the modules after this one: a new address
        successor = fleet.hosts[-1]
        assert successor["name"] == leaving["name"] and successor["debian"] == 13
        assert [h["address"] for h in fleet.hosts[:-1]] == [h["address"] for h in staying]
        deploy("provision", "-i", str(fleet.inventory), "--limit", f"{successor['name']},db")
        fleet.preload(f"{FLASK_IMAGE}:{test_release_b}")
        release_deploy(fleet, test_release, "--limit", successor["name"])
        assert debian(fleet, successor) == "13"
        assert (health(fleet, successor)["release"], health(fleet, successor)["variant"]) == (
            test_release, "gunicorn-gthread")
        loads[successor["name"]] = Load([successor])  # back in service
        release_deploy(fleet, test_release_b)  # the next release, on Debian 12 and 13 at once
    finally:
        counts.update({name: load.finish() for name, load in loads.items()})
    for name, seen in counts.items():
        assert seen["requests"] > 50, (name, seen)
        assert dropped(seen) == 0, f"{name}: {describe(seen)}"
    assert {health(fleet, host)["release"] for host in fleet.hosts} == {test_release_b}
    assert sorted(debian(fleet, host) for host in fleet.hosts) == ["12"] * len(staying) + ["13"]
