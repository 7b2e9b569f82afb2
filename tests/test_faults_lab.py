"""When/Then on the lab fleet: faults during deploys, with a load running and its failures counted.

- When a host's SSH is down during a deploy, then the other hosts get the release (max-fail rule), the report
  names the unreachable host, that host keeps serving the old release, and a rerun after it is back converges.
- When the deploy process is killed (SIGKILL, the whole process group) in the middle of the swap, then the next
  deploy says it takes over the stale lock, cleans up the half-done swap and converges: one app container per
  host, the new release.
- When something else listens on the app's port, then the deploy fails before changing that host, naming the
  process.
- When the Docker engine restarts on a host, then the app keeps serving (live-restore); when the host itself
  restarts, the app container comes back by its restart policy and serves.
- When the app's tls is on (the lab's own CA), then nginx answers its names over HTTPS with HTTP/2 and HSTS,
  redirects plain HTTP but for the health path, refuses the handshake for other names, a swap under HTTPS load
  fails no request, its smoke benchmark runs over HTTPS, a provision keeps HTTPS on, and a deploy without tls
  turns it off.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import FLASK, FLASK_DIR, NO_CHECKS, ROOT, deploy
from deploy_tool.external import EXEC_NOT_STARTED
from weblab import HOST_HEADER, Load, describe, dropped

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def fleet(provisioned_fleet, test_release, test_release_b):
    return provisioned_fleet[0].serving("gunicorn-gthread", test_release, test_release_b)


def host_exec(host: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """A command on the lab host as its console would run it (not over SSH: SSH may be what is down); tried again
    if runc could not start it (it did not run)."""
    for attempt in range(3):
        result = subprocess.run(["docker", "exec", host["container"], *argv], capture_output=True, text=True,
                                timeout=120)
        if not (result.returncode == 126 and EXEC_NOT_STARTED in result.stdout + result.stderr):
            break
        time.sleep(0.5 * (attempt + 1))
    return result


def health(fleet, host) -> dict:
    return json.loads(fleet.ssh(host, "curl -s -m 5 -H 'Host: demo.lab' http://127.0.0.1/health"))


def app_containers(fleet, host) -> list[str]:
    return fleet.ssh(host, "sudo docker ps --filter label=io.deploykit.app=deploykit-app --format '{{.Names}}'").split()


def release_deploy(fleet, release: str, *extra: str, check: bool = True):
    return deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", release, "--variant", "gunicorn-gthread",
                  *FLASK, *extra, check=check)


def test_an_unreachable_host_is_named_and_a_rerun_converges(fleet, test_release, test_release_b):
    down = fleet.hosts[-1]
    assert host_exec(down, "pkill", "-x", "sshd").returncode == 0
    load = Load(fleet.hosts)
    try:
        result = release_deploy(fleet, test_release_b, "--max-fail-percent", "50", check=False)
    finally:
        counts = load.finish()
        host_exec(down, "/etc/init.d/ssh", "start")
    assert result.returncode == 2, result.stdout[-2000:]
    assert f"{down['name']}: UNREACHABLE" in result.stdout and down["name"] in result.stderr
    assert dropped(counts) == 0, describe(counts)
    for host in fleet.hosts[:-1]:
        assert health(fleet, host)["release"] == test_release_b
    assert health(fleet, down)["release"] == test_release  # untouched, still serving
    rerun = release_deploy(fleet, test_release_b)
    assert "RECAP" in rerun.stdout
    for host in fleet.hosts:
        assert health(fleet, host)["release"] == test_release_b and len(app_containers(fleet, host)) == 1


def test_a_deploy_killed_mid_swap_is_cleaned_up_by_the_next(fleet, test_release, test_release_b):
    release_deploy(fleet, test_release_b)
    load = Load(fleet.hosts)
    try:
        killed = subprocess.Popen([sys.executable, "-m", "deploy_tool", *NO_CHECKS, "-i", str(fleet.inventory),
                                   "--version", test_release, "--variant", "gunicorn-gthread", *FLASK],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        seen = []
        for line in killed.stdout:  # wait for the swap to start on the hosts
            seen.append(line)
            if "task: Swap the app container" in line:
                break
        time.sleep(2.5)  # new containers started, not all of them through their gate yet
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        assert any("Swap the app container" in line for line in seen), "".join(seen[-20:])
        rerun = release_deploy(fleet, test_release)
    finally:
        counts = load.finish()
    assert "taking over a stale deploy lock" in rerun.stderr
    assert dropped(counts) == 0, describe(counts)
    for host in fleet.hosts:
        assert len(app_containers(fleet, host)) == 1
        assert health(fleet, host)["release"] == test_release


def test_a_foreign_process_on_the_app_port_stops_the_deploy_before_any_change(fleet, test_release,
                                                                              test_release_b):
    """The app holds one of the blue-green ports 8000 and 8001 (with SO_REUSEPORT; nothing else can bind it
    meanwhile): blue-green would move it to the other, where another program listens."""
    host = fleet.hosts[0]
    before = app_containers(fleet, host)
    port = fleet.ssh(host, "sudo docker inspect --format '{{index .Config.Labels \"io.deploykit.port\"}}' "
                           + " ".join(before)).split()
    assert port in (["8000"], ["8001"]), port
    other = 8001 if port == ["8000"] else 8000
    squatter = subprocess.Popen(["docker", "exec", host["container"], "python3", "-c",
                                 f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {other})); s.listen(); "
                                 "time.sleep(120)"])
    try:
        time.sleep(1.5)
        assert squatter.poll() is None, "the squatter could not listen"
        result = release_deploy(fleet, test_release_b, "--limit", host["name"], "--strategy", "blue-green",
                                check=False)
    finally:
        squatter.kill()
        host_exec(host, "pkill", "-f", "time.sleep\\(120\\)")
    assert result.returncode == 2
    assert f"port {other} is in use by python3 (pid" in result.stderr and "nothing was changed" in result.stderr
    assert app_containers(fleet, host) == before


def test_the_app_survives_an_engine_restart_and_a_host_restart(fleet, test_release):
    host, others = fleet.hosts[0], fleet.hosts[1:]
    container = app_containers(fleet, host)
    load = Load(fleet.hosts)
    try:
        restart = host_exec(host, "service", "docker", "restart")
        assert restart.returncode == 0, restart.stderr
    finally:
        counts = load.finish()
    assert dropped(counts) == 0, describe(counts)
    assert app_containers(fleet, host) == container

    load = Load(others)
    try:
        subprocess.run(["docker", "restart", "--time", "5", host["container"]], check=True, timeout=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            probe = host_exec(host, "curl", "-s", "-m", "2", "-H", "Host: demo.lab", "http://127.0.0.1/health")
            sshd = host_exec(host, "pgrep", "-x", "sshd")  # boot starts the engine and nginx before sshd
            if probe.returncode == 0 and '"release"' in probe.stdout and sshd.returncode == 0:
                break
            time.sleep(1)
    finally:
        counts = load.finish()
    assert dropped(counts) == 0, describe(counts)  # the other hosts did not notice
    assert json.loads(probe.stdout)["release"] == test_release
    assert app_containers(fleet, host) == container


def take_fleet_lock(fleet, token: str, holder: dict, lease: int) -> None:
    """The fleet's lock taken on its first web host as another controller's deploy takes it (the same module)."""
    taken = fleet.run_module(fleet.hosts[0], "deploykit_lock", {"token": token, "holder": holder, "lease": lease})
    assert not taken.get("failed"), taken


def test_the_fleet_lock_refuses_a_deploy_while_another_controller_holds_it(fleet, test_release, test_release_b):
    """The lock lives on the first web host, so a deploy from another machine (here: its lock, taken as its deploy
    takes it) refuses this one before any host is changed; `deploy lock status` names the holder, `deploy lock
    release` frees it; a lock whose lease ran out is taken over."""
    release_deploy(fleet, test_release)
    other = {"user": "ci", "controller": "runner-7/0badcafe", "pid": 4242, "command": "deploy --version 9.9.9"}
    take_fleet_lock(fleet, "f" * 32, other, lease=600)
    refused = release_deploy(fleet, test_release_b, check=False)
    assert refused.returncode == 2, refused.stdout[-2000:]
    said = refused.stdout + refused.stderr
    assert "another deploy holds the fleet's lock: ci@runner-7/0badcafe (pid 4242) running deploy --version 9.9.9" \
        in said, said[-2000:]
    assert "`deploy lock release`" in refused.stderr
    assert "task: Swap the app container" not in refused.stdout  # refused before the app role began
    for host in fleet.hosts:
        assert health(fleet, host)["release"] == test_release
    status = json.loads(deploy("lock", "status", "-i", str(fleet.inventory), "--json").stdout)
    assert status["host"] == fleet.hosts[0]["name"] and status["lock"]["holder"] == other
    assert not status["lock"]["expired"] and 500 < status["lock"]["seconds_left"] <= 600
    released = deploy("lock", "release", "-i", str(fleet.inventory))
    assert "released the fleet's lock" in released.stderr + released.stdout
    assert json.loads(deploy("lock", "status", "-i", str(fleet.inventory), "--json").stdout)["lock"] == {}

    take_fleet_lock(fleet, "e" * 32, other, lease=1)  # a holder that died: its lease runs out
    time.sleep(1.5)
    release_deploy(fleet, test_release_b)
    for host in fleet.hosts:
        assert health(fleet, host)["release"] == test_release_b
    assert json.loads(deploy("lock", "status", "-i", str(fleet.inventory), "--json").stdout)["lock"] == {}


def read_events(host: dict[str, str], seconds: int) -> dict:
    """Server-sent events through nginx: what arrived, whether the stream ended with its `end` event, and how."""
    started, events, ended, error = time.monotonic(), [], False, ""
    connection = http.client.HTTPConnection(host["address"], 80, timeout=120)
    try:
        connection.request("GET", f"/events?seconds={seconds}", headers={"Host": HOST_HEADER})
        response = connection.getresponse()
        for raw in response:
            line = raw.decode().strip()
            if line == "event: end":
                ended = True
            elif line.startswith("data: ") and not ended:
                events.append(json.loads(line[6:]))
    except (OSError, http.client.HTTPException) as exc:
        error = type(exc).__name__
    finally:
        connection.close()
    return {"events": events, "ended": ended, "error": error, "seconds": round(time.monotonic() - started, 1)}


def download(host: dict[str, str], mb: int, seconds: int) -> dict:
    started, digest, size, error, expected = time.monotonic(), hashlib.sha256(), 0, "", ""
    connection = http.client.HTTPConnection(host["address"], 80, timeout=120)
    try:
        connection.request("GET", f"/download?mb={mb}&seconds={seconds}", headers={"Host": HOST_HEADER})
        response = connection.getresponse()
        expected = response.getheader("X-Content-Sha256", "")
        while block := response.read(1 << 16):
            digest.update(block)
            size += len(block)
    except (OSError, http.client.HTTPException) as exc:
        error = type(exc).__name__
    finally:
        connection.close()
    return {"bytes": size, "intact": digest.hexdigest() == expected, "error": error,
            "seconds": round(time.monotonic() - started, 1)}


def upload(host: dict[str, str], size: int, seconds: int) -> dict:
    """A body sent slowly, 64 KiB at a time over `seconds`; the app's answer (its size and sha256)."""
    body = os.urandom(size)
    started = time.monotonic()
    connection = http.client.HTTPConnection(host["address"], 80, timeout=120)
    try:
        connection.putrequest("POST", "/upload", skip_host=True)
        connection.putheader("Host", HOST_HEADER)
        connection.putheader("Content-Length", str(size))
        connection.putheader("Content-Type", "application/octet-stream")
        connection.endheaders()
        blocks = [body[i:i + 65536] for i in range(0, size, 65536)]
        for block in blocks:
            connection.send(block)
            time.sleep(seconds / len(blocks))
        response = connection.getresponse()
        answer = json.loads(response.read()) if response.status == 200 else {}
        return {"status": response.status, "intact": answer.get("sha256") == hashlib.sha256(body).hexdigest()
                and answer.get("bytes") == size, "seconds": round(time.monotonic() - started, 1)}
    finally:
        connection.close()


def test_long_lived_requests_in_flight_during_a_swap_complete(fleet, test_release, test_release_b):
    """A 20 s event stream, a 50 MB download over 20 s and an upload over 15 s, in flight while the old container
    drains: each completes, from the container that began it. A stream longer than the app server's graceful
    timeout (app_graceful_timeout, 30 s) is cut at it: the figure is printed (docs/deploy.md)."""
    host = fleet.hosts[0]
    current = health(fleet, host)["release"]
    target = test_release if current == test_release_b else test_release_b
    # threads to spare beside the long requests (the example's deploykit.yml says 4 workers of 1 thread): a gthread
    # worker whose threads are all busy still accepts connections, and those are lost when it stops (measured: with
    # 1 thread, the upload, queued so on the old container, was answered 502 after 56 s, at its stop timeout)
    release_deploy(fleet, current, "--threads", "4")
    with ThreadPoolExecutor(4) as pool:
        stream = pool.submit(read_events, host, 20)
        endless = pool.submit(read_events, host, 120)
        down = pool.submit(download, host, 50, 20)
        up = pool.submit(upload, host, 900 * 1024, 15)  # under nginx's 1 MB body limit
        time.sleep(2.0)  # every request is in flight
        swapped = time.monotonic()
        release_deploy(fleet, target, "--threads", "4")
        deploy_seconds = time.monotonic() - swapped
        stream, endless, down, up = stream.result(), endless.result(), down.result(), up.result()
    print(f"\nlong-lived requests across a swap (deploy took {deploy_seconds:.1f} s): stream {stream['seconds']} s, "
          f"download {down['seconds']} s, upload {up['seconds']} s; a 120 s stream was cut after "
          f"{endless['seconds']} s ({len(endless['events'])} events, {endless['error'] or 'closed'})")
    assert stream["ended"] and not stream["error"] and len(stream["events"]) == 20, stream
    assert len({event["instance"] for event in stream["events"]}) == 1  # one container served it all
    assert down["bytes"] == 50 * 1024 * 1024 and down["intact"] and not down["error"], down
    assert up["status"] == 200 and up["intact"], up
    assert not endless["ended"] and len(endless["events"]) < 120, endless  # cut at the graceful timeout
    assert 25 < endless["seconds"] < 118, endless  # the signal comes after the gate: later on a busy machine
    assert health(fleet, host)["release"] == target


def test_maintenance_mode_answers_503_with_its_page_while_health_probes_and_a_deploy_go_on(fleet, test_release,
                                                                                          test_release_b):
    """`deploy maintenance on` (nginx, no reload): the app's pages get 503, the page with the message and
    Retry-After; its health path still reaches it, so a deploy in maintenance mode passes its checks through
    nginx; `off` brings the pages back. Both are in the audit log."""
    host = fleet.hosts[0]

    def page(path: str, on: dict[str, str] = host) -> tuple[str, str]:
        out = fleet.ssh(on, f"curl -s -i -m 5 -H 'Host: demo.lab' http://127.0.0.1{path}")
        head, _, body = out.replace("\r\n", "\n").partition("\n\n")
        return head, body

    try:
        result = deploy("maintenance", "on", "-i", str(fleet.inventory), "--message", "Back at 10:00 UTC <soon>")
        assert f"maintenance mode is on on {len(fleet.hosts)} host(s)" in result.stdout
        for each in fleet.hosts:
            head, body = page("/", each)
            assert head.startswith("HTTP/1.1 503") and "Retry-After: 300" in head, (each["name"], head)
            assert "Back at 10:00 UTC &lt;soon&gt;" in body
        head, body = page("/health")
        assert head.startswith("HTTP/1.1 200") and json.loads(body)["status"] == "ok"
        serving = health(fleet, host)["release"]
        other = test_release_b if serving == test_release else test_release
        release_deploy(fleet, other)  # its last check asks for the health path through nginx
        assert {health(fleet, each)["release"] for each in fleet.hosts} == {other}
        assert page("/")[0].startswith("HTTP/1.1 503")
    finally:  # whatever happened: the fleet serves the next tests
        deploy("maintenance", "off", "-i", str(fleet.inventory))
    for each in fleet.hosts:
        assert fleet.ssh(each, "curl -s -o /dev/null -w '%{http_code}' -H 'Host: demo.lab' http://127.0.0.1/") == "200"
    audit = [json.loads(line) for line in (ROOT / ".deploykit" / "audit.log").read_text().splitlines()]
    switches = [e for e in audit if e["inventory"] == str(fleet.inventory) and e["action"].startswith("maintenance")]
    assert [(e["action"], e["result"]) for e in switches[-2:]] == [("maintenance on", "ok"), ("maintenance off", "ok")]
    assert switches[-2]["message"] == "Back at 10:00 UTC <soon>"


def test_https_at_nginx_swaps_without_a_failed_request_and_a_provision_keeps_it(fleet, test_release,
                                                                                  test_release_b, tmp_path):
    """The Flask example with `tls.source: self-signed`: a certificate for its names from the lab's own CA
    (.deploykit/tls/ca.pem), which curl is given to verify it."""
    app = tmp_path / "flask-tls"
    shutil.copytree(FLASK_DIR, app, ignore=shutil.ignore_patterns("__pycache__"))
    with (app / "deploykit.yml").open("a") as spec:
        spec.write("tls:\n  source: self-signed\n  hsts_max_age: 300\n")
    ca = ROOT / ".deploykit" / "tls" / "ca.pem"

    def tls_deploy(release: str, *extra: str) -> dict:
        # the smoke's default duration (5 s): with 2 s, one host's smoke over HTTPS once finished no request and
        # counted no error (a clean-clone run on 2026-11-30: every request of those 2 s outlasted them)
        result = deploy("-i", str(fleet.inventory), "--version", release, "--variant", "gunicorn-gthread",
                        "--project", str(app), "--gate-failures-only", "--json", *extra)
        return json.loads(result.stdout)

    def curl(host: dict[str, str], url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        name = url.split("/")[2].split(":")[0]
        port = 443 if url.startswith("https") else 80
        return subprocess.run(["curl", "-sS", "-m", "10", "--cacert", str(ca), "--resolve",
                               f"{name}:{port}:{host['address']}", "-o", "/dev/null", "-D", "-", "-w",
                               "%{http_code} HTTP/%{http_version}", *extra, url], capture_output=True, text=True)

    serving = health(fleet, fleet.hosts[0])["release"]
    other = test_release_b if serving == test_release else test_release
    tls_deploy(other, "--no-swap-report")  # turns HTTPS on: a load over HTTPS would find nothing on 443 before
    for host in fleet.hosts:
        page = curl(host, "https://demo.lab/", "--http2")
        assert page.returncode == 0 and page.stdout.endswith("200 HTTP/2"), (host["name"], page.stdout, page.stderr)
        assert "strict-transport-security: max-age=300" in page.stdout.lower()
        moved = curl(host, "http://demo.lab/notes?x=1")
        assert moved.stdout.endswith("301 HTTP/1.1") and "location: https://demo.lab/notes?x=1" in moved.stdout.lower()
        assert curl(host, "http://demo.lab/health").stdout.endswith("200 HTTP/1.1")  # probes over HTTP go on
        stranger = curl(host, "https://other.lab/", "--insecure")
        assert stranger.returncode == 35, stranger  # the handshake is refused: no certificate shown
    # a swap under HTTPS load (the deploy's own swap-window load, over HTTPS to every host), smoke over HTTPS
    report = tls_deploy(serving)
    assert report["load"]["failures"] == 0 and report["load"]["requests"] > 100, report["load"]
    for host, result in report["smoke"]["hosts"].items():
        assert result["failed"] == 0 and result["rps"] > 0, (host, result)
    assert {health(fleet, host)["release"] for host in fleet.hosts} == {serving}
    # a provision re-renders nginx.conf: HTTPS stays on, with the files the deploy wrote
    deploy("provision", "-i", str(fleet.inventory))
    assert all(curl(host, "https://demo.lab/health").stdout.endswith("200 HTTP/2") for host in fleet.hosts)
    # a deploy of the app without tls turns HTTPS off
    release_deploy(fleet, other)
    for host in fleet.hosts:
        off = curl(host, "https://demo.lab/")  # HTTPS's default servers stay, and refuse a name with no HTTPS
        assert off.returncode == 35 and "unrecognized name" in off.stderr, off
        assert curl(host, "http://demo.lab/").stdout.endswith("200 HTTP/1.1")
