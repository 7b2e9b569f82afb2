"""Helpers of the lab web tests: requests through nginx as a browser sends them, and the load process."""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from conftest import LOAD_CLIENT, ROOT

HOST_HEADER = "demo.lab"
# 32 per host: 64 connections on the tests' 2-host fleet, the 64 the swap must hold (22 on each of 3 hosts
# before 2026-11-30). Unpaced, the client process took a whole core of this 2-core machine from the hosts under
# test, and a deploy under load took 2 to 3 minutes instead of 40 s. 150 requests per second per host was 450 of
# Django on the 3-host fleet, which is this machine's two cores. The lab tests load 60 per host: what they test is
# what a swap or a fault does to the connections held, and at 150 their deploys took twice as long (the
# several-apps test: 145 s at 150, 66 s at 40).
CONCURRENCY_PER_HOST = 32
RATE_PER_HOST = 60
# The soak swaps every variant under the same load since 2026-11-30: at 150 req/s per host its 12 deploys took
# 14 minutes of a clean-clone run that then passed 90 minutes in all (the machine slower that afternoon).
SOAK_RATE_PER_HOST = RATE_PER_HOST


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def client():
    """A browser-like opener: keeps cookies, does not follow redirects (the tests check them)."""
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect())


def request(opener, address: str, path: str, data: dict[str, str] | None = None, host: str = HOST_HEADER):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(f"http://{address}{path}", data=body, headers={"Host": host})
    try:  # the headers as a case-insensitive mapping: granian and the ASGI servers send lowercase names
        with opener.open(req, timeout=15) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:  # 3xx are not followed: they come back here
        return exc.code, exc.headers, exc.read().decode()


def browse_and_post_django(host: dict[str, str], variant: str, release: str) -> None:
    """GET the guestbook, POST the form with its CSRF token, follow the redirect, find the new row."""
    opener = client()
    status, _, page = request(opener, host["address"], "/")
    assert status == 200, f"{host['name']}: {page[:500]}"
    assert f"release {release} {variant}" in page
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    message = f"{variant}-{host['name']}-{uuid.uuid4().hex[:8]}"
    status, headers, _ = request(opener, host["address"], "/",
                                 {"csrfmiddlewaretoken": token, "name": "ops", "message": message})
    assert status == 302 and headers["Location"] == "/"
    status, _, page = request(opener, host["address"], "/")
    assert status == 200 and message in page
    assert len(re.findall(r"<li>", page)) <= 20
    health = json.loads(request(opener, host["address"], "/health")[2])
    assert (health["variant"], health["release"]) == (variant, release)


class Load:
    """The load client in its own process, stopped (SIGINT) when the deploy is done."""

    def __init__(self, hosts: list[dict[str, str]], path: str = "/health", host_header: str = HOST_HEADER,
                 rate: int = RATE_PER_HOST) -> None:
        urls = [arg for host in hosts for arg in ("--url", f"http://{host['address']}{path}")]
        self.process = subprocess.Popen(
            [sys.executable, str(LOAD_CLIENT), *urls, "--host-header", host_header,
             "--concurrency", str(CONCURRENCY_PER_HOST), "--rate", str(rate), "--duration", "300", "--json"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)

    def finish(self) -> dict[str, object]:
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=60)
        return json.loads(out)


def dropped(counts: dict) -> int:
    """Requests the swap lost: refused or reset connections and HTTP errors (a naive swap's 502s). Requests
    that took longer than the client's 10 s timeout are slow, not dropped: they are reported, not counted
    here (on this 2-core machine a new container's workers can take seconds to boot under this load)."""
    return int(counts["failures"]) - int(counts["errors"].get("TimeoutError", 0))


def describe(counts: dict) -> str:
    """The load's figures, and the seconds in which requests failed, for assertion messages."""
    failing = [b for b in counts["buckets"] if b["failures"]]
    return (f"{counts['failures']} failed of {counts['requests']} ({counts['errors']}), "
            f"{counts.get('retried', 0)} retried on a closed kept-alive connection, p99 {counts['p99_ms']} ms, "
            f"max {counts['max_ms']} ms; failing seconds: {failing}")


class PostLoad:
    """Form POSTs to the Flask app through nginx on every host, from threads of this process, a new connection
    per POST (so that nginx's own reloads, which close idle client connections, count for nothing): what nginx
    answers with 502 is a POST lost between nginx and the app (nginx never sends a POST twice)."""

    def __init__(self, hosts: list[dict[str, str]], per_host: int = 6) -> None:
        self.statuses: dict[str, int] = {}
        self.phase = "before"  # named by `during`; each outcome other than 303 is counted under it
        self.others: dict[str, dict[str, int]] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._post, args=(host["address"],), daemon=True)
                        for host in hosts for _ in range(per_host)]
        for thread in self.threads:
            thread.start()

    def _post(self, address: str) -> None:
        body = urllib.parse.urlencode({"note": "posted during a swap"})
        while not self.stop.is_set():
            connection = http.client.HTTPConnection(address, 80, timeout=30)
            try:
                connection.request("POST", "/", body=body, headers={
                    "Host": HOST_HEADER, "Content-Type": "application/x-www-form-urlencoded", "Connection": "close"})
                response = connection.getresponse()
                response.read()
                outcome = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                outcome = type(exc).__name__
            finally:
                connection.close()
            with self.lock:
                self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
                if outcome != "303":
                    phase = self.others.setdefault(self.phase, {})
                    phase[outcome] = phase.get(outcome, 0) + 1
            time.sleep(0.05)

    def during(self, phase: str) -> None:
        """Name what happens from now on (a swap), for the outcomes other than 303 (`others`)."""
        with self.lock:
            self.phase = phase

    def finish(self) -> dict[str, int]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return dict(self.statuses)


class CrashAtStep:
    """On every host of the fleet, crash the new container of `release` at the first of `steps` of its swap
    (tests/crash_at_step.py follows the swap's progress file); ready when this returns. `finish` says, host by
    host, whether and when it fired."""

    SCRIPT = ROOT / "tests" / "crash_at_step.py"

    def __init__(self, fleet, release: str, steps: str, app: str = "deploykit-app", timeout: int = 300) -> None:
        self.processes = {
            host["name"]: fleet.popen(host, f"sudo python3 - /run/deploykit/{app}.progress {release} {steps} {timeout}",
                                      stdin=self.SCRIPT.open("rb"))
            for host in fleet.hosts}
        for name, process in self.processes.items():
            line = process.stdout.readline()
            assert line.strip() == b"ready", f"{name}: crash_at_step did not start: {line!r} {process.stderr.read()!r}"

    def finish(self) -> dict[str, dict]:
        found = {}
        for name, process in self.processes.items():
            try:
                out, err = process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            last = out.decode().strip().splitlines()[-1:] or ["{}"]
            found[name] = {"fired": False, "stderr": err.decode()[-500:], **json.loads(last[0])}
        return found
