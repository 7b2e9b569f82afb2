"""Release images on the controller: an app's releases (`deploykit/NAME:VERSION`, built by deploy_tool/appbuild.py)
looked up by version and saved as archives (.cache/releases/) for hosts that load images from files."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from deploy_tool import external
from deploy_tool.errors import DeployError
from deploy_tool.project import Project

log = logging.getLogger(__name__)

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def validate_version(version: str) -> str:
    if not VERSION.fullmatch(version):
        raise DeployError(f"invalid release version {version!r}",
                          hint="use letters, digits, '.', '_' and '-' (a Docker tag), e.g. 1.4.2")
    return version


def app_image(version: str, repository: str) -> str:
    return f"{repository}:{validate_version(version)}"


@dataclass
class ReleaseBuilder:
    """Release images of one app's repository (`deploykit/NAME`): looked up, saved as archives for the hosts."""

    project: Project
    client: docker.DockerClient
    repository: str

    def image(self, version: str) -> str:
        return app_image(version, self.repository)

    def archive_path(self, version: str) -> Path:
        """.cache/releases/NAME-VERSION.tar (NAME: the repository's last part; the app role looks for it)."""
        name = self.repository.rsplit("/", 1)[-1]
        return self.project.cache_dir / "releases" / f"{name}-{validate_version(version)}.tar"

    def image_id(self, version: str) -> str | None:
        try:
            return str(self.client.images.get(self.image(version)).id)
        except docker.errors.ImageNotFound:
            return None

    def image_labels(self, version: str) -> dict[str, str]:
        return dict(self.client.images.get(self.image(version)).labels or {})

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
