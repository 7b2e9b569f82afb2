"""Every server variant serves the example apps through nginx on every lab host.

For each variant: `deploy --version ... --variant V --strategy recreate`, then on every host, through nginx (port 80):
GET the page, POST the form (with Django's CSRF token), follow the redirect, find the new row.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
import uuid

import pytest

from conftest import ROOT, deploy
from deploykit_serve import load_variants

pytestmark = pytest.mark.lab

VARIANTS = sorted(load_variants(ROOT / "apps" / "variants.yml"))
HOST_HEADER = "demo.lab"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def client():
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect())


def request(opener, address: str, path: str, data: dict[str, str] | None = None):
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(f"http://{address}{path}", data=body, headers={"Host": HOST_HEADER})
    try:
        with opener.open(req, timeout=15) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:  # 3xx are not followed: they come back here
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture(scope="module")
def fleet(provisioned_fleet, test_release):
    return provisioned_fleet[0]


def deploy_variant(fleet, release: str, variant: str, app: str) -> None:
    # recreate: consecutive variants may speak different protocols, which a reuse-port swap refuses
    deploy("-i", str(fleet.inventory), "--version", release, "--variant", variant, "--app", app,
           "--strategy", "recreate")


@pytest.mark.parametrize("variant", VARIANTS)
def test_django_browse_and_post_through_nginx(fleet, test_release, variant):
    deploy_variant(fleet, test_release, variant, "django")
    for host in fleet.hosts:
        opener = client()
        status, _, page = request(opener, host["address"], "/")
        assert status == 200, f"{host['name']}: {page[:500]}"
        assert f"release {test_release} {variant}" in page
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        message = f"{variant}-{host['name']}-{uuid.uuid4().hex[:8]}"
        status, headers, _ = request(opener, host["address"], "/",
                                     {"csrfmiddlewaretoken": token, "name": "ops", "message": message})
        assert status == 302 and headers["Location"] == "/"
        status, _, page = request(opener, host["address"], "/")
        assert status == 200 and message in page
        assert len(re.findall(r"<li>", page)) <= 20
        health = json.loads(request(opener, host["address"], "/health")[2])
        assert (health["variant"], health["release"]) == (variant, test_release)


@pytest.mark.parametrize("variant", VARIANTS)
def test_flask_through_nginx(fleet, test_release, variant):
    deploy_variant(fleet, test_release, variant, "flask")
    for host in fleet.hosts:
        opener = client()
        status, _, page = request(opener, host["address"], "/")
        assert status == 200 and "<h1>Notes</h1>" in page
        status, headers, _ = request(opener, host["address"], "/", {"note": f"hello {variant}"})
        assert status == 303 and headers["Location"] == "/"
