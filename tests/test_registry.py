"""Releases reach hosts through a real registry: Debian's docker-registry, TLS with the lab's own CA."""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest

from conftest import FLASK, FLASK_IMAGE, NO_CHECKS, ROOT, deploy

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def registry(provisioned_fleet, test_release, docker_client):
    fleet, _ = provisioned_fleet
    deploy("registry", "up", "--fleet", fleet.name)
    yield fleet
    deploy("registry", "down", "--fleet", fleet.name)
    deploy("lab", "up", "--fleet", fleet.name, "--hosts", "3")  # inventory without the registry again


def registry_endpoint(fleet) -> str:
    text = fleet.inventory.read_text()
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if "app_registry:" in line)


def test_registry_serves_tls_signed_by_the_lab_ca(registry):
    endpoint = registry_endpoint(registry)
    context = ssl.create_default_context(cafile=str(ROOT / ".deploykit" / "registry" / "ca.crt"))
    with urllib.request.urlopen(f"https://{endpoint}/v2/", context=context, timeout=5) as response:
        assert response.status == 200
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
