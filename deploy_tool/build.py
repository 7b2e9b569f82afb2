"""Release images of the example apps, built on the controller with no network inside the build.

The wheelhouse (.cache/wheelhouse) is made on the controller with pip, once per requirements file
content; apps/Dockerfile installs from it with --no-index. A release is tagged `deploykit/demo-app:<version>`
and can be saved as an archive (.cache/releases/) for hosts that load images from files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from deploy_tool import external
from deploy_tool.errors import DeployError
from deploy_tool.images import BASE_IMAGE, ImageBuilder
from deploy_tool.project import Project

log = logging.getLogger(__name__)

APP_IMAGE_REPO = "deploykit/demo-app"
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
REQUIREMENTS = ("app.txt", "eventlet.txt")


def validate_version(version: str) -> str:
    if not VERSION.fullmatch(version):
        raise DeployError(f"invalid release version {version!r}",
                          hint="use letters, digits, '.', '_' and '-' (a Docker tag), e.g. 1.4.2")
    return version


def app_image(version: str, repository: str = APP_IMAGE_REPO) -> str:
    return f"{repository}:{validate_version(version)}"


def pip_wheel_command(requirements: Path, wheelhouse: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
            "--wheel-dir", str(wheelhouse), "-r", str(requirements)]


@dataclass
class ReleaseBuilder:
    """Release images of one repository (the example apps', or an app's `deploykit/NAME`): built, looked up,
    saved as archives for the hosts."""

    project: Project
    client: docker.DockerClient
    repository: str = APP_IMAGE_REPO

    @property
    def wheelhouse(self) -> Path:
        return self.project.cache_dir / "wheelhouse"

    def image(self, version: str) -> str:
        return app_image(version, self.repository)

    def archive_path(self, version: str) -> Path:
        """.cache/releases/NAME-VERSION.tar (NAME: the repository's last part; the app role looks for it)."""
        name = self.repository.rsplit("/", 1)[-1]
        return self.project.cache_dir / "releases" / f"{name}-{validate_version(version)}.tar"

    def ensure_wheelhouse(self) -> None:
        """pip wheel each requirements file into the wheelhouse, unless done for this exact content."""
        self.wheelhouse.mkdir(parents=True, exist_ok=True)
        for name in REQUIREMENTS:
            requirements = self.project.root / "apps" / "requirements" / name
            digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
            stamp = self.wheelhouse / f".{name}.{digest}"
            if stamp.exists():
                continue
            log.info("building wheels for %s into %s", name, self.wheelhouse)
            result = external.run(pip_wheel_command(requirements, self.wheelhouse), f"pip wheel {name}", 1800,
                                  capture_output=True, text=True)
            if result.returncode != 0:
                errors = [line for line in result.stderr.splitlines() if not line.startswith("WARNING: Location")]
                raise DeployError(f"pip wheel {name} failed:\n" + "\n".join(errors[-15:]),
                                  hint="check that this machine reaches PyPI and the pins in apps/requirements exist")
            stamp.touch()

    def image_id(self, version: str) -> str | None:
        try:
            return str(self.client.images.get(self.image(version)).id)
        except docker.errors.ImageNotFound:
            return None

    def build(self, version: str, delay_ms: int = 0, rebuild: bool = False) -> str:
        """Build the release image; a release that exists is kept as it is (releases are immutable)
        unless rebuild is set. delay_ms > 0 bakes in a per-request delay (a deliberately slow release)."""
        tag = app_image(version)
        if self.image_id(version) and not rebuild:
            log.info("release %s exists: kept as built (use --rebuild to replace it)", tag)
            return tag
        ImageBuilder(self.project, self.client).ensure_base_image()
        self.ensure_wheelhouse()
        log.info("building %s (no network inside the build)", tag)
        try:
            self.client.images.build(
                path=str(self.project.root), dockerfile="apps/Dockerfile", tag=tag, rm=True, forcerm=True,
                buildargs={"BASE_IMAGE": BASE_IMAGE, "RELEASE": version, "APP_DELAY_MS": str(delay_ms)},
                network_mode="none",
            )
        except docker.errors.BuildError as exc:
            tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
            raise DeployError(f"building {tag} failed:\n{tail[-2500:]}", hint="see apps/Dockerfile") from exc
        return tag

    def save_archive(self, version: str) -> Path:
        """`docker save` of the release, for hosts that load images from files. The archive is written
        again when the image it holds (recorded beside it) is not the current image of that tag."""
        path = self.archive_path(version)
        marker = path.with_suffix(".image-id")
        image_id = self.image_id(version)
        if image_id is None:
            raise DeployError(f"release image {self.image(version)} is not on this controller",
                              hint=f"build it first: deploy build --version {version}")
        if path.exists() and marker.exists() and marker.read_text(encoding="utf-8") == image_id:
            return path
        log.info("saving %s to %s", self.image(version), path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")  # two deploys saving at once write apart
        with partial.open("wb") as stream:
            external.run(["docker", "save", self.image(version)], f"docker save {self.image(version)}", 900,
                         stdout=stream, check=True)
        partial.rename(path)
        marker.write_text(image_id, encoding="utf-8")
        return path
