"""Every server variant serves both example apps through nginx, on a fleet of mixed setups.

Every variant x Django and Flask (two setups per variant) is deployed as many at a time as the fleet has hosts,
one per host (on the tests' two hosts: each round one variant, Django on one host and Flask on the other): plain
`ansible-playbook playbooks/deploy.yml` (as the README says it runs) with each host's variant and app
(`app_name`: django-demo or flask-demo, whose images `deploy build` made) in an inventory of host variables beside
the fleet's, strategy recreate (a host's consecutive variants may speak different protocols). Then on every host,
through nginx (port 80): GET the page, POST the form (Django: with its CSRF token), follow the redirect, find the
new row (Django; Flask keeps notes per worker process, so only the redirect is checked); the page names the host's
own variant.
"""

from __future__ import annotations

import json

import pytest

from conftest import DJANGO, DJANGO_IMAGE, FLASK_IMAGE, LAB_HOSTS, NO_CHECKS, ROOT, ansible_playbook, deploy
from deploy_tool.variants import VARIANTS_FILE
from deploykit_serve import load_variants
from weblab import browse_and_post_django, client, request

pytestmark = pytest.mark.lab

VARIANTS = sorted(load_variants(ROOT / VARIANTS_FILE))


@pytest.fixture(scope="module")
def fleet(provisioned_fleet, test_release):
    fleet = provisioned_fleet[0]
    # plain ansible-playbook: no archive is written for it
    fleet.preload(*(f"{image}:{test_release}" for image in (DJANGO_IMAGE, FLASK_IMAGE)))
    # the database's schema: `deploy` runs the Django app's release command (its migrations) once; the plain
    # playbook runs below are given no release command
    deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", test_release, *DJANGO, "--strategy", "recreate",
           "--limit", fleet.hosts[0]["name"])
    return fleet


SETUPS = [(variant, app) for variant in VARIANTS for app in ("django-demo", "flask-demo")]


def rounds(hosts: int) -> list[list[tuple[str, str]]]:
    return [SETUPS[i:i + hosts] for i in range(0, len(SETUPS), hosts)]


def check_flask(host: dict[str, str], variant: str, release: str) -> None:
    opener = client()
    status, _, page = request(opener, host["address"], "/")
    assert status == 200 and "<h1>Notes</h1>" in page, f"{host['name']}: {page[:300]}"
    assert f"release {release} {variant}" in page, f"{host['name']}: {page[:300]}"
    # the notes live in the worker process that took the POST (no database): a later GET may meet another
    status, headers, _ = request(opener, host["address"], "/", {"note": f"hello {variant} {host['name']}"})
    assert status == 303 and headers["Location"] == "/"


@pytest.mark.parametrize("number", range(len(rounds(LAB_HOSTS))),
                         ids=["+".join(f"{v}/{a}" for v, a in r) for r in rounds(LAB_HOSTS)])
def test_every_setup_serves_through_nginx(fleet, test_release, tmp_path, number):
    setups = rounds(len(fleet.hosts))[number]
    hosts = fleet.hosts[:len(setups)]
    placed = {host["name"]: {"app_server_variant": variant, "app_name": app}
              for host, (variant, app) in zip(hosts, setups, strict=True)}
    (tmp_path / "setups.yml").write_text(json.dumps({"web": {"hosts": placed}}))
    result = ansible_playbook("-i", str(fleet.inventory), "-i", str(tmp_path / "setups.yml"),
                              "--limit", ",".join(placed), "playbooks/deploy.yml",
                              "-e", f"app_release={test_release}", "-e", "app_strategy=recreate")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for host, (variant, app) in zip(hosts, setups, strict=True):
        if app == "django-demo":
            browse_and_post_django(host, variant, test_release)
        else:
            check_flask(host, variant, test_release)


@pytest.mark.parametrize("variant", ["gunicorn-gevent", "gunicorn-eventlet", "uvicorn", "granian-asgi"])
def test_greenlet_and_asgi_workers_keep_a_pool_of_database_connections(fleet, test_release, tmp_path, variant):
    """Django under gevent and eventlet, and over ASGI (its own asgi.py: a context per request): 200 page views
    (each reads the database), 8 at a time, open at most as many PostgreSQL sessions as the pool holds
    (DB_POOL_SIZE 8 per process, 4 processes), not one per request (demo/pooled_postgresql/base.py). PostgreSQL
    counts the sessions it opened (pg_stat_database.sessions)."""
    from concurrent.futures import ThreadPoolExecutor

    host, db = fleet.hosts[0], fleet.hosts[0]  # the lab's database host is its first
    (tmp_path / "setup.yml").write_text(json.dumps({"web": {"hosts": {host["name"]: {
        "app_server_variant": variant, "app_name": "django-demo"}}}}))
    result = ansible_playbook("-i", str(fleet.inventory), "-i", str(tmp_path / "setup.yml"), "--limit", host["name"],
                              "playbooks/deploy.yml", "-e", f"app_release={test_release}",
                              "-e", "app_strategy=recreate")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    def sessions() -> int:
        return int(fleet.ssh(db, "sudo -u postgres psql -tAc \"select sessions from pg_stat_database "
                                 "where datname = 'demo'\"").strip())

    request(client(), host["address"], "/")  # the workers are up
    before = sessions()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: request(client(), host["address"], "/")[0], range(200)))
    opened = sessions() - before
    assert statuses == [200] * 200
    assert opened <= 4 * 8, f"{opened} sessions for 200 requests"
