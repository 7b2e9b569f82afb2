"""Shared fixtures. Tests marked `lab` start real lab hosts (Docker engine required)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TEST_RELEASE = os.environ.get("DEPLOYKIT_TEST_RELEASE", "0.0.0-ci")
TEST_RELEASE_B = os.environ.get("DEPLOYKIT_TEST_RELEASE_B", "0.0.1-ci")
# Deploys of tests that do not test the smoke benchmark or the swap-window report skip them (time).
NO_CHECKS = ("--no-smoke", "--no-swap-report")
LOAD_CLIENT = ROOT / "module_utils" / "deploykit_load.py"  # deploykit's load client, run as a script
# The example apps, deployed as any app is: by their directory (its deploykit.yml); images deploykit/NAME:V.
FLASK_DIR, DJANGO_DIR = ROOT / "apps" / "flask_demo", ROOT / "apps" / "django_demo"
FLASK = ("--project", str(FLASK_DIR))
DJANGO = ("--project", str(DJANGO_DIR))
FLASK_IMAGE = "deploykit/flask-demo"
DJANGO_IMAGE = "deploykit/django-demo"
# The tests' own lab fleet, named after this checkout: two checkouts' suites on one machine (one Docker engine)
# each get their own hosts, network and lock instead of deploying over each other.
CHECKOUT_TAG = hashlib.sha1(str(ROOT).encode()).hexdigest()[:6]
TEST_FLEET = f"citest-{CHECKOUT_TAG}"
# Two hosts: a fleet (rolling batches, a canary and its control, a host down while the other deploys, a mixed
# Debian fleet) at two thirds of three hosts' cost: every deploy under load of the lab tests shares this
# machine's two cores with the hosts it deploys to (the suite's lab half took 39.5 min on three, 2026-11-30).
LAB_HOSTS = 2
sys.path.insert(0, str(ROOT / "module_utils"))
sys.path.insert(0, str(ROOT / "apps" / "launcher"))


def deploy(*args: str, env: dict[str, str] | None = None, check: bool = True,
           cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the real `deploy` CLI in a subprocess, as a user would (from `cwd`: an app's own directory)."""
    merged = {**os.environ, **(env or {})}
    result = subprocess.run([sys.executable, "-m", "deploy_tool", *args], cwd=cwd, env=merged,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"deploy {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# the module_utils files the modules import, in the order they import each other
MODULE_UTILS = ("deploykit_load", "deploykit_bench", "deploykit_lock", "deploykit_probe", "deploykit_host",
                "deploykit_nginx", "deploykit_containers", "deploykit_gate", "deploykit_drain",
                "deploykit_strategies", "deploykit_stage", "deploykit_static", "deploykit_swapper", "deploykit_retire")


def module_utils(name: str):
    """The module_utils file `name` as the modules import it, ansible.module_utils.NAME (as Ansible packs it), the
    ones it imports registered before it."""
    for each in MODULE_UTILS:
        sys.modules.setdefault(f"ansible.module_utils.{each}", importlib.import_module(each))
    return sys.modules[f"ansible.module_utils.{name}"]


# a module file run as Ansible runs it on a host: its module_utils (argv[2], comma-separated, dependencies first)
# where Ansible's packer puts them, JSON arguments on stdin
_RUN_MODULE = ("import importlib, runpy, sys; sys.path.insert(0, sys.argv[1]); "
               "[sys.modules.setdefault('ansible.module_utils.' + n, importlib.import_module(n)) "
               "for n in sys.argv[2].split(',')]; "
               "sys.argv = sys.argv[3:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def run_module(name: str, args: dict, utils: tuple[str, ...], check_mode: bool = False) -> dict:
    """library/NAME.py run as Ansible runs a module: JSON arguments in, its JSON result out."""
    payload = json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}})
    result = subprocess.run([sys.executable, "-c", _RUN_MODULE, str(ROOT / "module_utils"), ",".join(utils),
                             str(ROOT / "library" / f"{name}.py")], input=payload, capture_output=True, text=True,
                            timeout=120)
    return json.loads(result.stdout)


def ansible_playbook(*args: str) -> subprocess.CompletedProcess[str]:
    """Run plain `ansible-playbook` from the project's venv, as the README says the playbooks run."""
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"})


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"the lab tests need a Docker engine (run ./scripts/bootstrap): {exc}")
    return client


class Fleet:
    """A running lab fleet under test, with helpers to reach its hosts."""

    def __init__(self, name: str, hosts: list[dict[str, str]], inventory: Path) -> None:
        self.name = name
        self.hosts = hosts
        self.inventory = inventory

    def serving(self, variant: str, *releases: str) -> Fleet:
        """The fleet with the releases loaded on every host (see preload) and the first deployed as `variant`
        of the Flask app (strategy recreate: it may change the protocol), for tests that swap under load."""
        self.preload(*(f"{FLASK_IMAGE}:{release}" for release in releases))
        deploy(*NO_CHECKS, "-i", str(self.inventory), "--version", releases[0], "--variant", variant, *FLASK,
               "--strategy", "recreate")
        return self

    def preload(self, *images: str) -> None:
        """Load images on every host before a load test starts. The lab hosts share this machine's one disk:
        several `docker load`s at once stall every host's writes (nginx's log among them) for seconds, an effect
        of the lab and not of the swap under test. Deploys then find an image by its id and skip shipping it.
        A host is sent, in one `docker save` (layers the images share are in it once), the images it lacks (by
        id: the same build)."""
        wanted = {image: subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                                        capture_output=True, text=True, check=True).stdout.strip()
                  for image in images}
        saved: dict[tuple[str, ...], bytes] = {}  # by the images lacking: hosts that lack the same share a save
        for host in self.hosts:
            lacking = tuple(image for image, image_id in wanted.items() if subprocess.run(
                self.ssh_argv(host, f"sudo docker image inspect --format '{{{{.Id}}}}' {image}"),
                capture_output=True, text=True, timeout=60).stdout.strip() != image_id)
            if lacking:
                if lacking not in saved:
                    saved[lacking] = subprocess.run(["docker", "save", *lacking], capture_output=True,
                                                    check=True).stdout
                subprocess.run(self.ssh_argv(host, "sudo docker load -q"), input=saved[lacking],
                               capture_output=True, check=True, timeout=300)

    def ssh_argv(self, host: dict[str, str], command: str) -> list[str]:
        known_hosts = ROOT / ".deploykit" / "fleets" / self.name / "known_hosts"
        return ["ssh", "-i", str(ROOT / ".deploykit" / "ssh" / "id_ed25519"), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
                f"deploykit@{host['address']}", command]

    def ssh(self, host: dict[str, str], command: str) -> str:
        result = subprocess.run(self.ssh_argv(host, command), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"ssh {host['name']} {command!r}: {result.stderr}"
        return result.stdout

    def run_module(self, host: dict[str, str], module: str, args: dict) -> dict:
        """One module of library/ run on the host by plain `ansible` (ad hoc, with become), as a playbook's task
        runs it: its result (failed or not)."""
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
               "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}
        result = subprocess.run([str(VENV_BIN / "ansible"), host["name"], "-i", str(self.inventory), "--become",
                                 "-m", module, "-a", json.dumps(args)], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)
        return dict(json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"][host["name"]])

    def popen(self, host: dict[str, str], command: str, stdin) -> subprocess.Popen[bytes]:
        """`command` on the host in the background, with `stdin`, its output in pipes."""
        return subprocess.Popen(self.ssh_argv(host, command), stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)


@pytest.fixture(scope="session")
def lab_fleet(docker_client) -> Iterator[Fleet]:
    """LAB_HOSTS lab hosts of a fleet of the tests' own (`citest-<checkout>`), removed at the end."""
    name = TEST_FLEET
    up = deploy("lab", "up", "--fleet", name, "--hosts", str(LAB_HOSTS), "--json")
    document = json.loads(up.stdout)
    yield Fleet(name, document["hosts"], Path(document["inventory"]))
    deploy("lab", "down", "--fleet", name)


@pytest.fixture(scope="session")
def provisioned_fleet(lab_fleet) -> tuple[Fleet, subprocess.CompletedProcess[str]]:
    """The test fleet after `deploy provision` (site.yml), with the first run's output."""
    return lab_fleet, deploy("provision", "-i", str(lab_fleet.inventory))


def build_examples(version: str, *extra: str) -> None:
    """Both example apps' release `version`, built by `deploy build` from their deploykit.yml as any app's."""
    for app in (FLASK, DJANGO):
        deploy("build", *app, "--version", version, *extra)


@pytest.fixture(scope="session")
def test_release(docker_client) -> str:
    """The release the tests deploy, of both example apps, built offline like any release from the code under test
    (--rebuild: a test release left by another checkout must not be kept; unchanged layers are cached), unless
    ./scripts/test built it from this checkout just before (DEPLOYKIT_TEST_RELEASE_BUILT)."""
    fresh = os.environ.get("DEPLOYKIT_TEST_RELEASE_BUILT") == TEST_RELEASE
    build_examples(TEST_RELEASE, *(() if fresh else ("--rebuild",)), "--archive")
    return TEST_RELEASE


@pytest.fixture(scope="session")
def test_release_b(docker_client) -> str:
    """A second release, to swap to and from."""
    build_examples(TEST_RELEASE_B, "--rebuild", "--archive")
    return TEST_RELEASE_B
