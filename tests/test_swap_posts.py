"""When/Then: form POSTs through nginx survive reuse-port swaps out of the servers whose graceful stop lost
them (the Flask app, gunicorn's tornado, eventlet and gevent workers), and out of uvicorn and granian, which
close kept connections at their stop.

nginx sends a GET again when the app's connection fails, never a POST: a POST in flight on a connection the
old server resets comes back as a 502. Measured before the fixes: 1 or 2 per swap out of eventlet (its
handlers asked the closed listener for its address: apps/launcher/deploykit_workers.py), 4 in a swap out of
tornado (its loop stops with kept connections open: nginx opens a connection per request to it,
`upstream_keepalive: false` in roles/app/vars/main/variants.yml). And one POST in 20,312 in a clean-clone run
of this test (2026-12-01): uvicorn and granian close idle kept connections at their stop, racing a request
nginx sends on one (measured apart, kept-alive POST clients: 4 and 6 lost in 10 stops). deploykit's uvicorn
leaves them to the client (apps/launcher/deploykit_uvicorn.py: 0 in 20); nginx opens a connection per request to
granian (0 in 10).
"""

from __future__ import annotations

import pytest

from conftest import FLASK, NO_CHECKS, deploy
from weblab import PostLoad

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def fleet(provisioned_fleet, test_release, test_release_b):
    return provisioned_fleet[0].serving("gunicorn-tornado", test_release, test_release_b)


def test_posts_are_not_lost_in_swaps_out_of_tornado_eventlet_gevent_and_the_asgi_servers(fleet, test_release,
                                                                                         test_release_b):
    # out of tornado (served by the fixture), then of eventlet, gevent, and the ASGI servers
    # (uvicorn's server is gunicorn-uvicorn's, granian's HTTP side granian-asgi's: one swap out of each server)
    swaps = [(test_release_b, "gunicorn-eventlet"), (test_release, "gunicorn-gevent"), (test_release_b, "uvicorn"),
             (test_release, "granian"), (test_release_b, "gunicorn-gthread")]
    posts = PostLoad(fleet.hosts)
    serving = "gunicorn-tornado"
    try:
        for release, variant in swaps:
            posts.during(f"{serving} to {variant}")
            deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", release, "--variant", variant, *FLASK)
            serving = variant
    finally:
        statuses = posts.finish()
    assert statuses.get("303", 0) > 500, statuses  # the form's POST-then-redirect answer
    assert set(statuses) == {"303"}, f"POSTs not answered 303: {statuses}, by swap: {posts.others}"
