"""A release image of an app of the user's, from its deploykit.yml, with no network inside the build.

The controller makes the wheels: `pip download` for the base image's Python (3.11 on Debian 12, 3.13 on
Debian 13), binary wheels only, into .cache/wheelhouse/pyX.Y (a pure-Python package that has no wheel is
built into one first). The build context is a folder assembled here: the app's files (less build.exclude,
deploykit.yml and the secrets file), the wheels, the requirements, deploykit's launcher; apps/app.Dockerfile
builds it on the Debian base and imports the app inside (deploykit_build.py): the app's own error fails the
build.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from deploy_tool import external
from deploy_tool.appspec import ENV_NAME, FILE_NAME, PYTHONS, AppSpec
from deploy_tool.build import ReleaseBuilder, validate_version
from deploy_tool.errors import DeployError
from deploy_tool.images import ImageBuilder, base_image
from deploy_tool.project import Project
from deploy_tool.variants import VARIANTS_FILE, load_variants

log = logging.getLogger(__name__)

# glibc of each base (Debian 12: 2.36, Debian 13: 2.41): the newest manylinux wheels its Python can load
GLIBC = {"3.11": 36, "3.13": 41}


def platforms(python: str, machine: str) -> list[str]:
    """Every manylinux platform tag the base's glibc takes, newest first (pip does not infer older ones)."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC[python], 4, -1)]
    return tags + [f"{legacy}_{machine}" for legacy in ("manylinux2014", "manylinux2010", "manylinux1")]


def app_requirements(spec: AppSpec) -> str:
    """The app's requirements as a requirements file's text: requirements.txt as it is, or the
    [project] dependencies of pyproject.toml."""
    name = spec["build.requirements"]
    if not name:
        return ""
    path = spec.directory / str(name)
    if path.name != "pyproject.toml":
        return path.read_text(encoding="utf-8")
    project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    return "".join(f"{dependency}\n" for dependency in project.get("dependencies", []))


def pip_download_command(python: str, wheelhouse: Path, requirements: list[Path]) -> list[str]:
    """Binary wheels for `python` on the base's platform, with what the wheelhouse already holds."""
    abi = "cp" + python.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--python-version", python, "--implementation", "cp", "--abi", abi,
               "--dest", str(wheelhouse), "--find-links", str(wheelhouse)]
    for tag in platforms(python, platform.machine()):
        command += ["--platform", tag]
    for path in requirements:
        command += ["-r", str(path)]
    return command


def parse_env(pairs: list[str]) -> dict[str, str]:
    """NAME=VALUE pairs of `deploy build --env`, checked: a variable name, a value on one line."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not ENV_NAME.fullmatch(name):
            raise DeployError(f"--env {pair!r} must be NAME=VALUE, NAME an environment variable name",
                              hint="e.g. --env FEATURE_X=1 (repeat --env for more)")
        if name == "PATH" or name.startswith("DEPLOYKIT_") or name in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE"):
            raise DeployError(f"--env {name}: the image sets it itself (how the app is found and served)",
                              hint="set the app's own variables; deploykit.yml says what the image serves")
        if "\n" in value or "\r" in value or "\0" in value:
            raise DeployError(f"--env {name}: the value must be one line")
        env[name] = value
    return env


def env_lines(env: dict[str, str]) -> str:
    """Dockerfile ENV lines, each value double-quoted with its backslashes, quotes and dollars escaped (the
    Dockerfile would otherwise expand $NAME in it)."""
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'

    return "".join(f"ENV {name}={quoted(value)}\n" for name, value in env.items())


def link_or_copy(source: str, target: str) -> None:
    """A hard link where both sides are on one file system (no copy of the wheels), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def excluded(spec: AppSpec) -> list[str]:
    return [*spec["build.exclude"], FILE_NAME, str(spec["runtime.secrets_file"]), ".deploykit"]


def copy_app(spec: AppSpec, target: Path) -> None:
    """The app's files, less what is excluded (patterns match a file's name or its path in the app)."""
    patterns = excluded(spec)

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(spec.directory)
        return {name for name in names for pattern in patterns
                if fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch((relative / name).as_posix(), pattern)}

    shutil.copytree(spec.directory, target, ignore=ignore, symlinks=True)


@dataclass
class AppBuilder:
    """`deploy build` of an app with a deploykit.yml."""

    project: Project
    client: docker.DockerClient
    spec: AppSpec

    @property
    def releases(self) -> ReleaseBuilder:
        return ReleaseBuilder(self.project, self.client, self.spec.image_repository)

    @property
    def python(self) -> str:
        return str(self.spec["build.python"])

    @property
    def wheelhouse(self) -> Path:
        return self.project.cache_dir / "wheelhouse" / f"py{self.python}"

    def build(self, version: str, rebuild: bool = False, env: dict[str, str] | None = None) -> str:
        """Build NAME:VERSION; a release that exists is kept as it is unless rebuild is set. `env` is baked into
        the image as its environment (after the build's checks, which see build.env only): a feature flag, or a
        fault of a test release."""
        releases = self.releases
        tag = releases.image(validate_version(version))
        if releases.image_id(version) and not rebuild:
            if env:
                raise DeployError(f"release {tag} exists: --env applies to a new build only",
                                  hint="add --rebuild to build it again with these variables, or pick a new version")
            log.info("release %s exists: kept as built (use --rebuild to replace it)", tag)
            return tag
        suite = PYTHONS[self.python]
        with tempfile.TemporaryDirectory(prefix="deploykit-build-") as tmp:
            context = Path(tmp)
            self.assemble(context, env)  # first: requirements that cannot be resolved fail before image work
            ImageBuilder(self.project, self.client).ensure_base_image(suite)
            log.info("building %s on Debian %s (Python %s), no network inside the build", tag, suite, self.python)
            try:
                self.client.images.build(
                    path=str(context), dockerfile="Dockerfile", tag=tag, rm=True, forcerm=True, network_mode="none",
                    buildargs={"BASE_IMAGE": base_image(suite), "RELEASE": version, "WSGI": self.spec["app.wsgi"],
                               "ASGI": self.spec["app.asgi"], "VARIANTS": ",".join(load_variants(self.project)),
                               "DJANGO_SETTINGS": self.spec["app.django_settings"]})
            except docker.errors.BuildError as exc:
                tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
                raise DeployError(f"building {tag} failed:\n{tail[-3000:]}",
                                  hint="the app's own error is above; build.env in deploykit.yml sets environment "
                                       "for the build's import check") from exc
        return tag

    def assemble(self, context: Path, env: dict[str, str] | None = None) -> None:
        """The build context: app/, wheels/, requirements/, deploykit/ and the Dockerfile."""
        requirements = context / "requirements"
        requirements.mkdir()
        servers = self.project.root / "apps" / "requirements"
        shutil.copy(servers / "servers.txt", requirements / "servers.txt")
        (requirements / "app.txt").write_text(app_requirements(self.spec), encoding="utf-8")
        self.ensure_wheels([requirements / "servers.txt", requirements / "app.txt"])
        eventlet = requirements / "eventlet.txt"  # empty: the image has no eventlet venv
        eventlet.write_text(servers.joinpath("eventlet.txt").read_text(encoding="utf-8")
                            if self.spec["build.eventlet"] else "", encoding="utf-8")
        if self.spec["build.eventlet"]:  # a resolution of its own: its gunicorn is older than servers.txt's
            self.ensure_wheels([eventlet, requirements / "app.txt"])
        shutil.copytree(self.wheelhouse, context / "wheels", copy_function=link_or_copy)
        copy_app(self.spec, context / "app")
        shutil.copytree(self.project.root / "apps" / "launcher", context / "deploykit",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(self.project.root / VARIANTS_FILE, context / "deploykit" / "variants.yml")
        (context / "deploykit" / "build.json").write_text(json.dumps({
            "framework": self.spec["app.framework"], "collectstatic": self.spec["build.collectstatic"],
            "env": self.spec["build.env"]}), encoding="utf-8")
        dockerfile = (self.project.root / "apps" / "app.Dockerfile").read_text(encoding="utf-8")
        (context / "Dockerfile").write_text(dockerfile + env_lines(env or {}), encoding="utf-8")

    def ensure_wheels(self, requirements: list[Path]) -> None:
        """Wheels of every requirement for the base's Python in the wheelhouse, unless done for this content."""
        digest = hashlib.sha256(b"".join(path.read_bytes() for path in requirements)).hexdigest()[:16]
        stamp = self.wheelhouse / f".{digest}"
        if stamp.exists():
            return
        self.wheelhouse.mkdir(parents=True, exist_ok=True)
        log.info("wheels for Python %s into %s", self.python, self.wheelhouse)
        download = pip_download_command(self.python, self.wheelhouse, requirements)
        result = external.run(download, "pip download", 1800, capture_output=True, text=True)
        if result.returncode != 0:  # a package without a wheel: build pure-Python ones, then again
            self.build_pure_wheels(requirements)
            result = external.run(download, "pip download", 1800, capture_output=True, text=True)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if not line.startswith("WARNING: Location")]
            raise DeployError(f"the requirements cannot be resolved for Python {self.python}:\n"
                              + "\n".join(errors[-12:]),
                              hint=f"check the names and pins in {self.spec['build.requirements'] or 'the app'}, "
                                   "and that each has a wheel for this Python (or is pure Python)")
        stamp.touch()

    def build_pure_wheels(self, requirements: list[Path]) -> None:
        """pip wheel every requirement with this controller's Python; keep the wheels any Python 3 takes."""
        with tempfile.TemporaryDirectory(prefix="deploykit-wheels-") as tmp:
            command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
                       "--wheel-dir", tmp]
            for path in requirements:
                command += ["-r", str(path)]
            external.run(command, "pip wheel", 1800, capture_output=True, text=True)
            for wheel in Path(tmp).glob("*-none-any.whl"):
                if "-py3-" in wheel.name or "-py2.py3-" in wheel.name:
                    shutil.copy(wheel, self.wheelhouse / wheel.name)
