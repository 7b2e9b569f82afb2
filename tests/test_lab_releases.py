"""Lab hosts of Debian 12 and 13: `lab up --debian`, one host image per release, a host of another release
replaced. No Docker engine: the engine is a stand-in that records what deploykit asks of it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest

from conftest import deploy
from deploy_tool.errors import DeployError
from deploy_tool.fleetnames import LABEL_DEBIAN, LABEL_FLEET, LABEL_INDEX
from deploy_tool.images import ImageBuilder, base_image
from deploy_tool.lab import LabFleet, LabHost, host_releases, inventory_document
from deploy_tool.project import Project

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.mark.parametrize("spec, count, releases", [
    ("12", 3, [12, 12, 12]),
    ("13", 2, [13, 13]),
    ("trixie", 1, [13]),
    ("bookworm", 2, [12, 12]),
    ("12,12,12,13", 4, [12, 12, 12, 13]),
    (" 13 , Bookworm ", 2, [13, 12]),
    ("13", 40, [13] * 40),
])
def test_one_release_for_every_host_or_one_per_host(spec, count, releases):
    assert host_releases(spec, count) == releases


@pytest.mark.parametrize("spec, count, message", [
    ("14", 3, "unknown Debian release '14'"),
    ("11", 1, "unknown Debian release '11'"),
    ("sid", 1, "unknown Debian release 'sid'"),
    ("12,,13", 3, "unknown Debian release ''"),
    ("", 1, "unknown Debian release ''"),
    ("12.0", 1, "unknown Debian release '12.0'"),
    ("12,13", 3, "--debian lists 2 releases for 3 hosts"),
    ("12,13,13", 2, "--debian lists 3 releases for 2 hosts"),
])
def test_a_bad_release_list_is_one_error_with_a_hint(spec, count, message):
    with pytest.raises(DeployError, match="hint:") as error:
        host_releases(spec, count)
    assert message in str(error.value)


@pytest.mark.parametrize("args, message", [
    (["--debian", "14"], "unknown Debian release '14'"),
    (["--hosts", "4", "--debian", "12,13"], "--debian lists 2 releases for 4 hosts"),
])
def test_lab_up_refuses_a_bad_release_before_docker(args, message):
    result = deploy("lab", "up", "--fleet", "never", *args, env=NO_ENGINE, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "hint:" in result.stderr and "no Docker engine" not in result.stderr


def test_the_inventory_gives_each_host_its_release():
    hosts = [LabHost("lab-1", "deploykit-lab-1", "10.0.0.2", "running", 12),
             LabHost("lab-2", "deploykit-lab-2", "10.0.0.3", "running", 13)]
    web = inventory_document(hosts, Path("/k/id"), Path("/k/known"), "lab")["all"]["children"]["web"]["hosts"]
    assert web == {"lab-1": {"ansible_host": "10.0.0.2", "deploykit_lab_debian": 12},
                   "lab-2": {"ansible_host": "10.0.0.3", "deploykit_lab_debian": 13}}


class FakeImages:
    """Base images present; anything else is built (recorded) on request."""

    def __init__(self) -> None:
        self.present = {base_image("bookworm"): "sha256:b12", base_image("trixie"): "sha256:b13"}
        self.builds: list[dict[str, Any]] = []

    def get(self, name: str) -> Any:
        if name not in self.present:
            raise docker.errors.ImageNotFound(name)
        return SimpleNamespace(id=self.present[name])

    def build(self, **kwargs: Any) -> None:
        self.builds.append(kwargs)
        self.present[kwargs["tag"]] = f"sha256:{len(self.builds)}"


def test_each_release_has_its_own_host_image_on_its_own_base(tmp_path):
    (tmp_path / "lab" / "host-image").mkdir(parents=True)
    (tmp_path / "lab" / "host-image" / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    images = FakeImages()
    builder = ImageBuilder(Project(tmp_path), SimpleNamespace(images=images))  # type: ignore[arg-type]
    bookworm, trixie = builder.ensure_host_image("bookworm"), builder.ensure_host_image("trixie")
    assert bookworm != trixie and bookworm.startswith("deploykit/lab-host:")
    assert [b["buildargs"]["BASE_IMAGE"] for b in images.builds] == [base_image("bookworm"), base_image("trixie")]
    bookworm_packages, trixie_packages = (b["buildargs"]["PREFETCH_PACKAGES"].split() for b in images.builds)
    assert "postgresql" in bookworm_packages and "docker-cli" not in bookworm_packages  # Debian 12 has none
    assert "postgresql" in trixie_packages and "docker-cli" in trixie_packages
    assert builder.ensure_host_image("trixie") == trixie and len(images.builds) == 2  # built once


class FakeContainer:
    def __init__(self, fleet: str, index: int, image: str, release: int | None) -> None:
        self.name = f"deploykit-{fleet}-{index}"
        self.labels = {LABEL_FLEET: fleet, LABEL_INDEX: str(index)}
        if release is not None:
            self.labels[LABEL_DEBIAN] = str(release)
        self.attrs = {"Config": {"Image": image, "Hostname": f"{fleet}-{index}"}, "HostConfig": {}}
        self.status = "running"
        self.removed = False
        self.updates: list[str] = []

    def update(self, cpuset_cpus: str) -> None:
        self.updates.append(cpuset_cpus)
        self.attrs["HostConfig"]["CpusetCpus"] = cpuset_cpus

    def reload(self) -> None:
        pass

    def remove(self, **_: Any) -> None:
        self.removed = True


@pytest.fixture
def fleet(monkeypatch, tmp_path):
    """A LabFleet whose engine holds `fleet.containers`; hosts it starts are recorded in `fleet.started`."""
    images = {"bookworm": "deploykit/lab-host:twelve", "trixie": "deploykit/lab-host:thirteen"}
    monkeypatch.setattr(ImageBuilder, "ensure_host_image", lambda self, suite: images[suite])
    lab = LabFleet(Project(tmp_path), client=None, fleet="rel")
    lab._machine_cpus = 2  # no engine to ask
    lab.containers: list[FakeContainer] = []  # type: ignore[misc]
    lab.started: list[tuple[int, int, str]] = []  # type: ignore[misc]

    def run_host(image: str, index: int, release: int, cpus: str = "all") -> FakeContainer:
        lab.started.append((index, release, image))
        return FakeContainer("rel", index, image, release)

    monkeypatch.setattr(lab, "_containers", lambda: [c for c in lab.containers if not c.removed])
    monkeypatch.setattr(lab, "_run_host", run_host)
    monkeypatch.setattr(lab, "_wait_booted", lambda c: LabHost(c.attrs["Config"]["Hostname"], c.name, "10.0.0.9",
                                                                 c.status, lab._release(c)))
    for step in ("_ensure_ssh_key", "_ensure_network", "_authorize", "_write_known_hosts", "_write_inventory",
                 "_ensure_secrets", "_wait_ssh"):
        monkeypatch.setattr(lab, step, lambda *_: None)
    return lab


def test_up_replaces_a_host_of_another_release_and_keeps_the_others(fleet):
    fleet.containers = [FakeContainer("rel", 1, "deploykit/lab-host:twelve", 12),
                        FakeContainer("rel", 2, "deploykit/lab-host:twelve", 12),
                        FakeContainer("rel", 3, "deploykit/lab-host:thirteen", 13)]
    hosts = fleet.up(4, "12,13,13,13")
    assert [c.removed for c in fleet.containers] == [False, True, False]
    assert fleet.started == [(2, 13, "deploykit/lab-host:thirteen"), (4, 13, "deploykit/lab-host:thirteen")]
    assert [h.debian for h in hosts] == [12, 13, 13, 13]


def test_up_keeps_the_hosts_cpus_unless_told_and_new_hosts_take_the_fleets(fleet, monkeypatch):
    fleet.containers = [FakeContainer("rel", 1, "deploykit/lab-host:twelve", 12),
                        FakeContainer("rel", 2, "deploykit/lab-host:twelve", 12)]
    fleet.containers[0].attrs["HostConfig"]["CpusetCpus"] = "1"
    fleet.containers[0].status = "exited"  # no cgroups of its own to move: no command in it
    monkeypatch.setattr(fleet.containers[0], "start", lambda: None, raising=False)
    cpus: list[str] = []
    monkeypatch.setattr(fleet, "_run_host", lambda image, index, release, given="all": (
        cpus.append(given) or FakeContainer("rel", index, image, release)))
    fleet.up(3)
    assert cpus == ["1"] and [c.updates for c in fleet.containers] == [[], []]  # host 2 keeps all
    fleet.up(2, cpus="0-1")  # all of this machine's two: host 1 widened; host 2 has them
    assert [c.updates for c in fleet.containers] == [["0-1", "0-1"], []]


def test_up_without_a_release_keeps_debian_12_hosts_and_replaces_a_13_one(fleet):
    fleet.containers = [FakeContainer("rel", 1, "deploykit/lab-host:twelve", None),  # started before the label
                        FakeContainer("rel", 2, "deploykit/lab-host:thirteen", 13)]
    hosts = fleet.up(2)
    assert [c.removed for c in fleet.containers] == [False, True]
    assert fleet.started == [(2, 12, "deploykit/lab-host:twelve")]
    assert [h.debian for h in hosts] == [12, 12]


def test_up_replaces_a_host_of_the_same_release_built_from_an_older_image(fleet):
    fleet.containers = [FakeContainer("rel", 1, "deploykit/lab-host:older", 13)]
    fleet.up(1, "trixie")
    assert fleet.containers[0].removed and fleet.started == [(1, 13, "deploykit/lab-host:thirteen")]
