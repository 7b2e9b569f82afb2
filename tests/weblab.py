"""Helpers of the lab web tests: requests through nginx as a browser sends them, and the load process."""

from __future__ import annotations

import http.cookiejar
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

from conftest import ROOT

HOST_HEADER = "demo.lab"
# 22 per host: 66 connections on the 3-host fleet, above the 64 the swap must hold, at 150 requests per second
# per host: unpaced, the client process took a whole core of this 2-core machine from the hosts under test,
# and a deploy under load took 2 to 3 minutes instead of 40 s.
CONCURRENCY_PER_HOST = 22
RATE_PER_HOST = 150


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def client():
    """A browser-like opener: keeps cookies, does not follow redirects (the tests check them)."""
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect())


def request(opener, address: str, path: str, data: dict[str, str] | None = None):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(f"http://{address}{path}", data=body, headers={"Host": HOST_HEADER})
    try:
        with opener.open(req, timeout=15) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:  # 3xx are not followed: they come back here
        return exc.code, dict(exc.headers), exc.read().decode()


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

    def __init__(self, hosts: list[dict[str, str]]) -> None:
        urls = [arg for host in hosts for arg in ("--url", f"http://{host['address']}/health")]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deploy_tool.loadgen", *urls, "--host-header", HOST_HEADER,
             "--concurrency", str(CONCURRENCY_PER_HOST), "--rate", str(RATE_PER_HOST), "--duration", "300", "--json"],
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
