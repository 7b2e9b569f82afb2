"""Images built on the controller, with no registry to pull from.

The base image is a Debian minbase root filesystem made by debootstrap and imported into Docker.
The lab host image is built on it from lab/host-image, one per Debian release, and tagged by a hash of its
inputs (the base image among them), so a changed Dockerfile gives a new tag and an unchanged one is never rebuilt.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from deploy_tool import external
from deploy_tool.errors import DeployError
from deploy_tool.project import Project

log = logging.getLogger(__name__)

# minbase plus python3 and python3-venv: app images then build venvs with no apt and no network.
SUITE = "bookworm"  # the lab hosts' default Debian release
SUITES = ("bookworm", "trixie")  # Debian 12 (Python 3.11) and 13 (Python 3.13): app images and lab hosts on either
DEBIAN_RELEASES = {12: "bookworm", 13: "trixie"}  # the version number of each of SUITES
BASE_PACKAGES = ("python3", "python3-venv")
HOST_IMAGE_REPO = "deploykit/lab-host"


def base_image(suite: str = SUITE) -> str:
    return f"deploykit/debian:{suite}-minbase-py3"


# Packages the roles install on hosts, downloaded (not installed) into the host image's apt cache:
# Debian 12 and 13 both have each of them (by these names; their versions differ, docs/lab.md), and Debian 13
# splits the docker command line out of docker.io (the docker role installs it there).
HOST_PREFETCH = ("docker.io", "python3-requests", "nginx", "postgresql", "python3-psycopg2")
HOST_PREFETCH_OF_SUITE = {"bookworm": (), "trixie": ("docker-cli",)}


def apt_mirror(sources_glob: str = "/etc/apt/sources.list.d/*.sources",
               legacy_list: str = "/etc/apt/sources.list") -> str:
    """The Debian mirror this machine's apt uses; never hard-coded in the repository."""
    for path in sorted(glob.glob(sources_glob)):
        text = Path(path).read_text(encoding="utf-8")
        for match in re.finditer(r"^URIs:\s*(\S+)", text, re.MULTILINE):
            if "security" not in match.group(1):
                return match.group(1)
    legacy = Path(legacy_list)
    if legacy.exists():
        for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+", legacy.read_text(encoding="utf-8"),
                                 re.MULTILINE):
            if "security" not in match.group(1):
                return match.group(1)
    raise DeployError("no Debian mirror found in this machine's apt sources",
                      hint=f"configure apt ({sources_glob} or {legacy_list}) so that `apt-get update` works")


def debootstrap_command(target: Path, mirror: str, suite: str = SUITE) -> list[str]:
    return ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", suite, str(target), mirror]


def context_image_tag(repository: str, context: Path, base_image_id: str, buildargs: dict[str, str]) -> str:
    """`<repository>:<hash>` of the build context's files, the base image and the build arguments."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(path.relative_to(context).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update(base_image_id.encode())
    digest.update(repr(sorted(buildargs.items())).encode())
    return f"{repository}:{digest.hexdigest()[:12]}"


def host_image_tag(context: Path, base_image_id: str, prefetch: tuple[str, ...] = HOST_PREFETCH) -> str:
    return context_image_tag(HOST_IMAGE_REPO, context, base_image_id, {"PREFETCH_PACKAGES": " ".join(prefetch)})


@dataclass
class ImageBuilder:
    project: Project
    client: docker.DockerClient

    def image_id(self, name: str) -> str | None:
        try:
            return str(self.client.images.get(name).id)
        except docker.errors.ImageNotFound:
            return None

    def ensure_base_image(self, suite: str = SUITE) -> str:
        """Import the Debian minbase image of `suite`, from the cached root filesystem tarball or a new
        debootstrap."""
        name = base_image(suite)
        existing = self.image_id(name)
        if existing:
            return existing
        tarball = self.project.cache_dir / "images" / f"{name.replace('/', '_').replace(':', '_')}.tar"
        if not tarball.exists():
            self._debootstrap_to(tarball, suite)
        log.info("importing %s into Docker as %s", tarball.name, name)
        with tarball.open("rb") as stream:
            external.run(["docker", "import", "-", name], f"docker import {name}", 900, stdin=stream, check=True,
                         stdout=subprocess.DEVNULL)
        image_id = self.image_id(name)
        assert image_id is not None
        return image_id

    def _debootstrap_to(self, tarball: Path, suite: str) -> None:
        if shutil.which("debootstrap") is None:
            raise DeployError("debootstrap is not installed", hint="run ./scripts/bootstrap first")
        mirror = apt_mirror()
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="deploykit-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            log.info("debootstrap %s minbase from %s (about a minute)", suite, mirror)
            result = external.run(debootstrap_command(rootfs, mirror, suite), f"debootstrap {suite}", 1800,
                                  capture_output=True, text=True)
            if result.returncode != 0:
                tail = "\n".join(result.stdout.splitlines()[-10:] + result.stderr.splitlines()[-10:])
                raise DeployError(f"debootstrap failed:\n{tail}",
                                  hint="check that this machine reaches its Debian mirror (apt-get update)")
            partial = tarball.with_suffix(".partial")
            external.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], "tar of the root filesystem", 900,
                         check=True)
            partial.rename(tarball)

    def ensure_host_image(self, suite: str = SUITE) -> str:
        """The lab host image (lab/host-image) of Debian `suite`, built when its tag is not in Docker yet."""
        prefetch = HOST_PREFETCH + HOST_PREFETCH_OF_SUITE.get(suite, ())
        return self.ensure_context_image(HOST_IMAGE_REPO, self.project.host_image_dir,
                                         {"PREFETCH_PACKAGES": " ".join(prefetch)}, suite)

    def ensure_context_image(self, repository: str, context: Path, buildargs: dict[str, str],
                             suite: str = SUITE) -> str:
        """Build an image of a folder on the base image of `suite`, tagged by a hash of its inputs, unless
        present."""
        base_id = self.ensure_base_image(suite)
        tag = context_image_tag(repository, context, base_id, buildargs)
        if self.image_id(tag):
            return tag
        log.info("building %s on Debian %s (packages from Debian, about a minute)", tag, suite)
        try:
            self.client.images.build(path=str(context), tag=tag, rm=True, forcerm=True,
                                     buildargs={"BASE_IMAGE": base_image(suite), **buildargs})
        except docker.errors.BuildError as exc:
            tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
            raise DeployError(f"building {tag} failed:\n{tail[-2000:]}",
                              hint="the build installs Debian packages: check the machine reaches its mirror") from exc
        return tag
