"""The lab fleet's container registry: Debian's docker-registry in a container on the fleet's network.

It serves TLS with a certificate for its own address, signed by a CA made for this checkout
(.deploykit/registry/, local only). Hosts trust that CA through the docker role
(docker_registry_ca_certs: /etc/docker/certs.d/ADDRESS:5000/ca.crt) and pull from ADDRESS:5000.
Every request is authenticated (htpasswd: one account, `deploykit`, its password made for this checkout in
.deploykit/registry/password; hosts log in through the docker role's docker_registry_auths); deletes are off.
The controller pushes through a port published on its loopback (Docker allows loopback registries). A deploy
from the registry checks that the image a host pulled is the one built (its id: the hash of its config, which
names every layer's hash), so a tag replaced in the registry is refused.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from deploy_tool import external
from deploy_tool.build import app_image
from deploy_tool.errors import DeployError
from deploy_tool.fleetnames import LABEL_FLEET, LABEL_ROLE, network_name, registry_container_name
from deploy_tool.images import ImageBuilder
from deploy_tool.project import Project

log = logging.getLogger(__name__)

REGISTRY_REPO = "deploykit/registry"
REGISTRY_PORT = 5000
REGISTRY_USER = "deploykit"


def ca_commands(directory: Path) -> list[list[str]]:
    """openssl commands that make this checkout's registry CA (an EC key, ten years)."""
    return [["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "3650", "-subj", "/CN=deploykit lab registry CA", "-keyout", str(directory / "ca.key"),
             "-out", str(directory / "ca.crt")]]


def server_cert_commands(directory: Path, address: str) -> list[list[str]]:
    """openssl commands for a certificate naming the registry's address, signed by the CA."""
    return [
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", f"/CN={address}", "-keyout", str(directory / "registry.key"),
         "-out", str(directory / "registry.csr")],
        ["openssl", "x509", "-req", "-in", str(directory / "registry.csr"), "-CA", str(directory / "ca.crt"),
         "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "825",
         "-out", str(directory / "registry.crt"),
         "-extfile", str(directory / "san.cnf")],
    ]


@dataclass(frozen=True)
class RegistryInfo:
    container: str
    address: str  # on the fleet's network: what hosts pull from
    loopback_port: int  # on the controller: what it pushes to

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{REGISTRY_PORT}"


class LabRegistry:
    def __init__(self, project: Project, client: docker.DockerClient, fleet: str) -> None:
        self.project = project
        self.client = client
        self.fleet = fleet

    @property
    def container_name(self) -> str:
        return registry_container_name(self.fleet)

    @property
    def ca_dir(self) -> Path:
        return self.project.state_dir / "registry"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def password_file(self) -> Path:
        return self.ca_dir / "password"

    def credentials(self) -> dict[str, str]:
        return {"username": REGISTRY_USER, "password": self.password_file.read_text(encoding="utf-8").strip()}

    def _container(self) -> Any | None:
        try:
            return self.client.containers.get(self.container_name)
        except docker.errors.NotFound:
            return None

    def info(self) -> RegistryInfo | None:
        container = self._container()
        if container is None or container.status != "running":
            return None
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = networks.get(network_name(self.fleet), {}).get("IPAddress", "")
        bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{REGISTRY_PORT}/tcp") or []
        if not address or not bindings:
            return None
        return RegistryInfo(container.name, address, int(bindings[0]["HostPort"]))

    def inventory_vars(self) -> dict[str, Any]:
        info = self.info()
        if info is None or not self.password_file.exists():  # none, or one of an older deploykit: `registry up`
            return {}
        return {"app_registry": info.endpoint,
                "docker_registry_ca_certs": {info.endpoint: self.ca_cert.read_text(encoding="utf-8")},
                "docker_registry_auths": {info.endpoint: self.credentials()}}

    # -- up / down -------------------------------------------------------------------------------
    def up(self) -> RegistryInfo:
        network = network_name(self.fleet)
        if not self.client.networks.list(names=[network]):
            raise DeployError(f"lab fleet {self.fleet} has no network {network}",
                              hint=f"start the fleet first: deploy lab up --fleet {self.fleet}")
        self._ensure_ca()
        self._ensure_password()
        existing = self.info()
        if existing and self._answers(existing) and self._refuses_anonymous(existing):
            return existing
        image = ImageBuilder(self.project, self.client).ensure_context_image(
            REGISTRY_REPO, self.project.root / "lab" / "registry-image", {})
        stale = self._container()
        if stale is not None:
            stale.remove(force=True, v=True)
        log.info("starting the lab registry %s", self.container_name)
        container = self.client.containers.run(
            image, detach=True, name=self.container_name, network=network,
            ports={f"{REGISTRY_PORT}/tcp": ("127.0.0.1", None)},
            labels={LABEL_FLEET: self.fleet, LABEL_ROLE: "registry"},
            mounts=[Mount(target="/var/lib/docker-registry", source=None, type="volume")],
            restart_policy={"Name": "no"})
        container.reload()
        info = self.info()
        if info is None:
            raise DeployError(f"the registry container {self.container_name} did not get an address",
                              hint=f"docker logs {self.container_name}")
        self._install_certificate(container, info.address)
        self._wait_answers(info)
        log.info("lab registry: https://%s (hosts), 127.0.0.1:%d (controller pushes)", info.endpoint,
                 info.loopback_port)
        return info

    def down(self) -> bool:
        container = self._container()
        if container is None:
            return False
        container.remove(force=True, v=True)
        return True

    def _ensure_ca(self) -> None:
        if self.ca_cert.exists():
            return
        self.ca_dir.mkdir(parents=True, exist_ok=True)
        self.ca_dir.chmod(0o700)
        for command in ca_commands(self.ca_dir):
            subprocess.run(command, check=True, capture_output=True)

    def _ensure_password(self) -> None:
        if self.password_file.exists():
            return
        partial = self.password_file.with_name(f".password.{os.getpid()}")
        partial.write_text(secrets.token_urlsafe(24), encoding="utf-8")
        partial.chmod(0o600)
        os.replace(partial, self.password_file)

    def _install_certificate(self, container: Any, address: str) -> None:
        with tempfile.TemporaryDirectory(prefix="deploykit-registry-") as tmp:
            directory = Path(tmp)
            for name in ("ca.crt", "ca.key"):
                (directory / name).write_bytes((self.ca_dir / name).read_bytes())
            (directory / "san.cnf").write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n")
            for command in server_cert_commands(directory, address):
                subprocess.run(command, check=True, capture_output=True)
            htpasswd = external.exec_in(container, ["htpasswd", "-Bbn", REGISTRY_USER, self.credentials()["password"]],
                                        "htpasswd")  # not the command: it holds the password
            (directory / "htpasswd").write_text(htpasswd.strip() + "\n")
            archive = BytesIO()
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for name in ("registry.crt", "registry.key", "htpasswd"):
                    tar.add(directory / name, arcname=name)
                ready = tarfile.TarInfo("ready")
                tar.addfile(ready, BytesIO(b""))
            container.put_archive("/certs", archive.getvalue())

    def _answers(self, info: RegistryInfo) -> bool:
        """Whether it answers (over TLS, as its CA says) and takes this checkout's credentials."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        login = base64.b64encode(f"{REGISTRY_USER}:{self.credentials()['password']}".encode()).decode()
        request = urllib.request.Request(f"https://{info.endpoint}/v2/", headers={"Authorization": f"Basic {login}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=3) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _refuses_anonymous(self, info: RegistryInfo) -> bool:
        """Whether a request without credentials is refused (401): a registry of an older deploykit was not."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        try:
            with urllib.request.urlopen(f"https://{info.endpoint}/v2/", context=context, timeout=3):
                return False
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except (OSError, urllib.error.URLError):
            return False

    def _wait_answers(self, info: RegistryInfo, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers(info):
                return
            time.sleep(0.3)
        raise DeployError(f"the lab registry at https://{info.endpoint} does not answer",
                          hint=f"docker logs {self.container_name}")

    # -- push ------------------------------------------------------------------------------------
    def push(self, version: str, repository: str) -> str:
        """Push a release of `repository` through the loopback port; returns the name hosts pull."""
        info = self.info()
        if info is None:
            raise DeployError(f"the lab registry of fleet {self.fleet} is not running",
                              hint=f"deploy registry up --fleet {self.fleet}")
        image = app_image(version, repository)
        source = self.client.images.get(image)
        target = f"127.0.0.1:{info.loopback_port}/{repository}"
        source.tag(target, tag=version)
        log.info("pushing %s:%s", target, version)
        for line in self.client.images.push(target, tag=version, stream=True, decode=True,
                                            auth_config=self.credentials()):
            if "error" in line:
                raise DeployError(f"push to the lab registry failed: {line['error']}",
                                  hint=f"docker logs {self.container_name}")
        return f"{info.endpoint}/{image}"
