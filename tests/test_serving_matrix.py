"""Every server variant serves the example apps through nginx on every lab host.

For each variant: `deploy --version ... --variant V --strategy recreate`, then on every host, through nginx (port 80):
GET the page, POST the form (with Django's CSRF token), follow the redirect, find the new row.
"""

from __future__ import annotations

import pytest

from conftest import NO_CHECKS, ROOT, deploy
from deploykit_serve import load_variants
from weblab import browse_and_post_django, client, request

pytestmark = pytest.mark.lab

VARIANTS = sorted(load_variants(ROOT / "apps" / "variants.yml"))


@pytest.fixture(scope="module")
def fleet(provisioned_fleet, test_release):
    return provisioned_fleet[0]


def deploy_variant(fleet, release: str, variant: str, app: str) -> None:
    # recreate: consecutive variants may speak different protocols, which a reuse-port swap refuses
    deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", release, "--variant", variant, "--app", app,
           "--strategy", "recreate")


@pytest.mark.parametrize("variant", VARIANTS)
def test_django_browse_and_post_through_nginx(fleet, test_release, variant):
    deploy_variant(fleet, test_release, variant, "django")
    for host in fleet.hosts:
        browse_and_post_django(host, variant, test_release)


@pytest.mark.parametrize("variant", VARIANTS)
def test_flask_through_nginx(fleet, test_release, variant):
    deploy_variant(fleet, test_release, variant, "flask")
    for host in fleet.hosts:
        opener = client()
        status, _, page = request(opener, host["address"], "/")
        assert status == 200 and "<h1>Notes</h1>" in page
        status, headers, _ = request(opener, host["address"], "/", {"note": f"hello {variant}"})
        assert status == 303 and headers["Location"] == "/"
