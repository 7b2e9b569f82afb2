"""Every server variant stops gracefully: SIGTERM (docker stop) lets a request in flight finish.

Each variant runs in a real container of the test release on this machine's loopback (host network).
A 1.5 s request is started, then `docker stop` sends SIGTERM: the request must complete with 200 and
the server exit 0, without docker's SIGKILL.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from conftest import FLASK_IMAGE, ROOT
from deploy_tool.variants import VARIANTS_FILE
from deploykit_probe import probe
from deploykit_serve import load_variants

# with the lab tests (not beside molecule's hosts): the in-flight request's 1.5 s and the stop's grace are timings
pytestmark = pytest.mark.lab

VARIANTS = load_variants(ROOT / VARIANTS_FILE)
BASE_PORT = 18600
SLOW_MS = 1500


@pytest.fixture(scope="module")
def servers(docker_client, test_release):
    """All variants at once, one loopback port each."""
    started = {}
    for offset, variant in enumerate(sorted(VARIANTS)):
        port = BASE_PORT + offset
        container = docker_client.containers.run(
            f"{FLASK_IMAGE}:{test_release}", detach=True, network_mode="host", name=f"deploykit-graceful-{variant}",
            environment={"DEPLOYKIT_VARIANT": variant, "DEPLOYKIT_PORT": str(port),
                         "DEPLOYKIT_PROCESSES": "2", "DEPLOYKIT_THREADS": "2", "DEPLOYKIT_GRACEFUL_TIMEOUT": "20"},
            read_only=True, tmpfs={"/tmp": ""}, cap_drop=["ALL"], labels={"io.deploykit.test": "graceful"})
        started[variant] = (container, port)
    for variant, (container, port) in started.items():
        wait_healthy(VARIANTS[variant]["protocol"], port, container)
    yield started
    for container, _ in started.values():
        container.remove(force=True)


def wait_healthy(protocol: str, port: int, container, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe(protocol, "127.0.0.1", port, "/health", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{container.name} never became healthy:\n{container.logs().decode()[-2000:]}")


class SlowRequest:
    """A request of `ms` milliseconds to the server on `port`, in flight in a thread of its own from now."""

    def __init__(self, port: int, ms: int, protocol: str = "http") -> None:
        self.result: object = None
        self.thread = threading.Thread(target=self._run, args=(protocol, port, ms))
        self.thread.start()

    def _run(self, protocol: str, port: int, ms: int) -> None:
        try:
            self.result = probe(protocol, "127.0.0.1", port, f"/slow?ms={ms}", timeout=30)
        except OSError as exc:
            self.result = exc

    def answer(self) -> object:
        """(status, body, headers) once answered, or the error that ended it."""
        self.thread.join(timeout=30)
        return self.result


def run_alone(docker_client, test_release: str, variant: str, port: int, name: str, processes: int = 2):
    """One container of `variant` on `port`, for a test of its own; healthy when returned."""
    container = docker_client.containers.run(
        f"{FLASK_IMAGE}:{test_release}", detach=True, network_mode="host", name=f"deploykit-{name}-{variant}",
        environment={"DEPLOYKIT_VARIANT": variant, "DEPLOYKIT_PORT": str(port),
                     "DEPLOYKIT_PROCESSES": str(processes), "DEPLOYKIT_GRACEFUL_TIMEOUT": "20"},
        read_only=True, tmpfs={"/tmp": ""}, cap_drop=["ALL"], labels={"io.deploykit.test": "graceful"})
    try:
        wait_healthy("http", port, container)
    except AssertionError:
        container.remove(force=True)
        raise
    return container


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sigterm_lets_the_request_in_flight_finish(servers, variant):
    container, port = servers[variant]
    protocol = VARIANTS[variant]["protocol"]
    request = SlowRequest(port, SLOW_MS, protocol)
    time.sleep(0.4)  # the request is in flight, well before it ends
    started = time.monotonic()
    subprocess.run(["docker", "stop", "-t", "25", container.name], check=True, capture_output=True)
    stop_took = time.monotonic() - started

    result = request.answer()
    assert isinstance(result, tuple), f"{variant}: the request in flight failed: {result!r}"
    status, body, _ = result
    assert status == 200
    assert json.loads(body)["slept_ms"] == SLOW_MS
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
    assert container.attrs["State"]["OOMKilled"] is False
    assert 0.5 < stop_took < 20, f"{variant}: stop took {stop_took:.1f} s (the request needed ~1.1 s more)"
    with pytest.raises(OSError):
        probe(protocol, "127.0.0.1", port, "/health", timeout=2)  # and nothing listens any more


@pytest.mark.parametrize("variant", ["gunicorn-gevent", "gunicorn-eventlet"])
def test_greenlet_workers_close_their_listener_at_the_signal_not_at_their_next_look(docker_client, test_release,
                                                                                      variant):
    """gunicorn's gevent and eventlet workers look at their stop flag once a second; deploykit's (see
    apps/launcher/deploykit_workers.py) close their listener at once: 0.25 s after SIGTERM a new connection is
    refused while the request in flight still runs, and then is answered. (gunicorn's own would still take
    it with a chance of 3 in 4.)"""
    import socket

    port = BASE_PORT + 40 + sorted(VARIANTS).index(variant)
    container = run_alone(docker_client, test_release, variant, port, "prompt")
    try:
        time.sleep(2)  # one worker answers; the other may still be booting (and holds the listener meanwhile)
        request = SlowRequest(port, 3000)
        time.sleep(0.4)
        container.kill(signal="SIGTERM")
        time.sleep(0.25)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert request.thread.is_alive(), "the slow request ended before the check"
        answer = request.answer()
        assert isinstance(answer, tuple) and answer[0] == 200, answer
    finally:
        container.remove(force=True)


def test_the_tornado_worker_stops_listening_at_the_signal_not_at_its_next_heartbeat(docker_client, test_release):
    """gunicorn's tornado worker stops its server at its first heartbeat after SIGTERM (once a second);
    deploykit's (apps/launcher/deploykit_workers.py) at once: 0.25 s after SIGTERM a new connection is refused.
    (gunicorn's own would still take it with a chance of 3 in 4.) Its WSGI calls run in its event loop, so a
    request in flight would hold the heartbeat back: idle workers here."""
    import socket

    port = BASE_PORT + 50
    container = run_alone(docker_client, test_release, "gunicorn-tornado", port, "prompt")
    try:
        time.sleep(2)  # one worker answers; the other may still be booting (and holds the listener meanwhile)
        container.kill(signal="SIGTERM")
        time.sleep(0.25)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        container.wait(timeout=20)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
    finally:
        container.remove(force=True)


@pytest.mark.parametrize("variant", ["uvicorn", "gunicorn-uvicorn"])
def test_uvicorn_leaves_a_kept_connection_idle_at_the_stop_to_its_client(docker_client, test_release, variant):
    """uvicorn's own stop closes every idle kept connection at once, racing nginx, which may be sending a
    request on it (a POST it cannot send again: 502). deploykit's (apps/launcher/deploykit_uvicorn.py) leaves
    it to its client: a request on it 0.3 s after SIGTERM, while another request is still in flight, is
    answered, with `connection: close`, and the server still exits 0."""
    import http.client

    port = BASE_PORT + 60 + sorted(VARIANTS).index(variant)
    container = run_alone(docker_client, test_release, variant, port, "kept", processes=1)
    try:
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        kept.request("GET", "/health")
        first = kept.getresponse()
        first.read()
        assert first.status == 200 and first.getheader("connection", "").lower() != "close"
        slow = SlowRequest(port, 2000)
        time.sleep(0.3)
        container.kill(signal="SIGTERM")
        time.sleep(0.3)
        kept.request("GET", "/health")  # on the connection kept idle since before the signal
        again = kept.getresponse()
        again.read()
        assert again.status == 200
        assert again.getheader("connection", "").lower() == "close"
        answer = slow.answer()
        assert isinstance(answer, tuple) and answer[0] == 200, answer
        container.wait(timeout=20)
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
    finally:
        container.remove(force=True)
