"""Releases reach hosts through a real registry: Debian's docker-registry, TLS with the lab's own CA."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request

import pytest

from conftest import FLASK, FLASK_IMAGE, NO_CHECKS, ROOT, ansible_playbook, deploy

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def registry(provisioned_fleet, test_release, docker_client):
    fleet, _ = provisioned_fleet
    deploy("registry", "up", "--fleet", fleet.name)
    yield fleet
    deploy("registry", "down", "--fleet", fleet.name)
    deploy("lab", "up", "--fleet", fleet.name, "--hosts", str(len(fleet.hosts)))  # inventory without the registry again


def registry_endpoint(fleet) -> str:
    text = fleet.inventory.read_text()
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if "app_registry:" in line)


CA = ROOT / ".deploykit" / "registry" / "ca.crt"


def login() -> dict[str, str]:
    password = (ROOT / ".deploykit" / "registry" / "password").read_text().strip()
    return {"Authorization": "Basic " + base64.b64encode(f"deploykit:{password}".encode()).decode()}


def registry_call(endpoint: str, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(f"https://{endpoint}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=str(CA)), timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_registry_serves_tls_signed_by_the_lab_ca_and_only_to_its_login(registry):
    endpoint = registry_endpoint(registry)
    assert registry_call(endpoint, "/v2/", headers=login()) == 200
    assert registry_call(endpoint, "/v2/") == 401  # no login, no answer
    assert registry_call(endpoint, "/v2/", headers={"Authorization": "Basic " + base64.b64encode(
        b"deploykit:guessed").decode()}) == 401
    with pytest.raises(urllib.error.URLError):  # without the lab CA, the certificate is not trusted
        urllib.request.urlopen(f"https://{endpoint}/v2/", context=ssl.create_default_context(), timeout=5)


def test_deploy_through_the_registry(registry, test_release):
    endpoint = registry_endpoint(registry)
    deploy("provision", "-i", str(registry.inventory))  # hosts learn to trust the registry's CA
    deploy(*NO_CHECKS, "-i", str(registry.inventory), "--version", test_release, "--variant", "gunicorn-gthread",
           *FLASK, "--image-source", "registry")
    for host in registry.hosts:
        # pulled from the registry; the container runs that image (when an earlier test left a container of the
        # same image id and settings, the swap rightly kept it: same image, same container)
        pulled = registry.ssh(host, "sudo docker image inspect -f '{{.Id}}' "
                                    f"{endpoint}/{FLASK_IMAGE}:{test_release}")
        running = registry.ssh(host, "sudo docker inspect -f '{{.Image}}' $(sudo docker ps -q --filter "
                                     "label=io.deploykit.app=deploykit-app)")
        assert pulled.strip() and pulled.strip() == running.strip()
        assert registry.ssh(host, f"test -s /etc/docker/certs.d/{endpoint}/ca.crt && echo trusted").strip() == "trusted"
        health = json.loads(registry.ssh(host, "curl -s -H 'Host: demo.lab' http://127.0.0.1/health"))
        assert (health["release"], health["variant"]) == (test_release, "gunicorn-gthread")
        assert registry.ssh(host, "sudo stat -c %a /root/.docker/config.json").strip() == "600"
    # nothing can be deleted, even with the login
    manifest = urllib.request.Request(
        f"https://{endpoint}/v2/{FLASK_IMAGE}/manifests/{test_release}", method="HEAD",
        headers={**login(), "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(manifest, context=ssl.create_default_context(cafile=str(CA)), timeout=5) as answer:
        digest = answer.headers["Docker-Content-Digest"]
    assert registry_call(endpoint, f"/v2/{FLASK_IMAGE}/manifests/{digest}", "DELETE", login()) == 405


def test_a_tag_replaced_in_the_registry_is_refused_by_the_hosts(registry, test_release, test_release_b,
                                                                docker_client, tmp_path):
    """Someone with the registry's login pushes another image under the release's tag: the hosts pull it, see
    that it is not the image built (its id), and refuse it before any container changes."""
    loopback = docker_client.containers.get(f"deploykit-{registry.name}-registry").ports["5000/tcp"][0]["HostPort"]
    password = (ROOT / ".deploykit" / "registry" / "password").read_text().strip()
    other = docker_client.images.get(f"{FLASK_IMAGE}:{test_release_b}")
    other.tag(f"127.0.0.1:{loopback}/{FLASK_IMAGE}", tag=test_release)
    for line in docker_client.images.push(f"127.0.0.1:{loopback}/{FLASK_IMAGE}", tag=test_release, stream=True,
                                          decode=True, auth_config={"username": "deploykit", "password": password}):
        assert "error" not in line, line
    built = docker_client.images.get(f"{FLASK_IMAGE}:{test_release}").id
    (tmp_path / "setup.yml").write_text(json.dumps({"web": {"hosts": {h["name"]: {
        "app_name": "flask-demo", "app_server_variant": "gunicorn-gthread", "app_database": False}
        for h in registry.hosts}}}))
    result = ansible_playbook("-i", str(registry.inventory), "-i", str(tmp_path / "setup.yml"), "playbooks/deploy.yml",
                              "-e", f"app_release={test_release}", "-e", "app_image_source=registry",
                              "-e", f"app_image_id={built}")
    assert result.returncode != 0
    assert f"is image {other.id}, not {built}, the release built on the controller" in result.stdout, \
        result.stdout[-3000:]
    assert "Swap the app container" not in result.stdout
