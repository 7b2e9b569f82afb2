"""The lab fleet: simulated Debian hosts as containers on this machine, reached over real SSH.

Each host runs its own sshd and (once provisioned) its own Docker engine on a volume, as a VM would.
The flags below are the ones measured to work on this kind of machine (`--privileged` does not):
see docs/lab.md for every point where a lab host differs from a VM.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml
from docker.types import Mount

from deploy_tool import external
from deploy_tool.cpus import cpu_set, cpu_text
from deploy_tool.errors import DeployError
from deploy_tool.fleetnames import (
    DEFAULT_FLEET,
    LABEL_DEBIAN,
    LABEL_FLEET,
    LABEL_INDEX,
    host_container_name,
    network_name,
)
from deploy_tool.images import DEBIAN_RELEASES, ImageBuilder
from deploy_tool.project import Project
from deploy_tool.registry import LabRegistry

log = logging.getLogger(__name__)

SSH_USER = "deploykit"
FLEET_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
MAX_HOSTS = 40
BOOT_TIMEOUT = 60.0
DEFAULT_DEBIAN = 12  # the hosts' Debian release when `lab up` is given none (and of hosts labelled with none)
# What --debian takes for a release: its number or its code name.
DEBIAN_NAMES = {**{str(number): number for number in DEBIAN_RELEASES},
                **{suite: number for number, suite in DEBIAN_RELEASES.items()}}

# How a lab host container is started: the measured replacement for --privileged
# (`--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined,apparmor=unconfined,
# systempaths=unconfined --device-cgroup-rule 'a *:* rwm' --tmpfs /run --tmpfs /tmp -v /var/lib/docker`).
HOST_CONFIG_OPTIONS: dict[str, Any] = {
    "init": True,
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
    "tmpfs": {"/run": "", "/tmp": ""},
}
# `systempaths=unconfined` is a docker CLI option: in the API it is empty masked and read-only path lists,
# which lets the host write /proc/sys (per-namespace sysctls such as net.ipv4.tcp_migrate_req).
HOST_CONFIG_UNCONFINED_PATHS: dict[str, Any] = {"MaskedPaths": [], "ReadonlyPaths": []}


@dataclass(frozen=True)
class LabHost:
    name: str
    container: str
    address: str
    state: str
    debian: int  # the Debian release it runs (12, 13)
    cpus: str = "all"  # the machine's CPUs it may run on (its container's cpuset; all: any)


def validate_fleet_name(fleet: str) -> str:
    if not FLEET_NAME.fullmatch(fleet):
        raise DeployError(f"invalid lab fleet name {fleet!r}",
                          hint="use lowercase letters, digits and dashes, starting with a letter (e.g. lab)")
    return fleet


def validate_host_count(count: int) -> int:
    if not 1 <= count <= MAX_HOSTS:
        raise DeployError(f"--hosts must be between 1 and {MAX_HOSTS}, not {count}",
                          hint="each lab host runs its own Docker engine; 3 is the usual fleet")
    return count


def validate_cpus(cpus: str | None, machine_cpus: int) -> str | None:
    """`--cpus` checked against the Docker engine's CPUs: None (not given: hosts keep theirs, new hosts take the
    fleet's), "all", or a CPU list of that machine as cpuset takes it (0, 1, 0-1, 0,2-3), "all" when it names
    them all."""
    if cpus is None or cpus == "all":
        return cpus
    hint = f"a CPU list such as 1 or 0-1 (this machine: 0-{machine_cpus - 1}), or all"
    try:
        named = cpu_set(cpus)
    except ValueError as exc:
        raise DeployError(f"--cpus {cpus!r}: {exc}", hint=hint) from exc
    if max(named) >= machine_cpus:
        raise DeployError(f"--cpus {cpus}: this machine has CPUs 0-{machine_cpus - 1}", hint=hint)
    return "all" if len(named) == machine_cpus else cpu_text(named)


def host_releases(spec: str, count: int) -> list[int]:
    """Each host's Debian release from `lab up --debian`: one release for every host, or a comma list with one
    release per host (a mixed fleet). A release is its number or its code name (12 or bookworm, 13 or trixie)."""
    releases = []
    for word in spec.split(","):
        number = DEBIAN_NAMES.get(word.strip().lower())
        if number is None:
            raise DeployError(f"--debian: unknown Debian release {word.strip()!r}",
                              hint=f"one of {', '.join(DEBIAN_NAMES)}; a comma list gives each host its own "
                                   "(e.g. --hosts 3 --debian 12,12,13)")
        releases.append(number)
    if len(releases) == 1:
        return releases * count
    if len(releases) != count:
        raise DeployError(f"--debian lists {len(releases)} releases for {count} hosts",
                          hint="give one release for every host (--debian 13), or one per host in the order of "
                               f"the hosts (--hosts {count} --debian {','.join(['12'] * (count - 1) + ['13'])})")
    return releases


def inventory_document(hosts: list[LabHost], key: Path, known_hosts: Path, fleet: str) -> dict[str, Any]:
    """The Ansible inventory of a fleet: every lab host is a web host, the first also the db host."""
    return {
        "all": {
            "children": {
                "web": {"hosts": {host.name: {"ansible_host": host.address, "deploykit_lab_debian": host.debian}
                                  for host in hosts}},
                "db": {"hosts": {host.name: {} for host in hosts[:1]}},
            },
            "vars": {
                "ansible_user": SSH_USER,
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                ),
                "deploykit_lab_fleet": fleet,
            },
        }
    }


class LabFleet:
    """Start, list and remove the hosts of one named fleet."""

    def __init__(self, project: Project, client: docker.DockerClient, fleet: str = DEFAULT_FLEET) -> None:
        self.project = project
        self.client = client
        self.fleet = validate_fleet_name(fleet)
        self._machine_cpus: int | None = None

    # -- names and paths -------------------------------------------------------------------------
    @property
    def network_name(self) -> str:
        return network_name(self.fleet)

    def host_name(self, index: int) -> str:
        return f"{self.fleet}-{index}"

    def container_name(self, index: int) -> str:
        return host_container_name(self.fleet, index)

    @property
    def fleet_state_dir(self) -> Path:
        return self.project.state_dir / "fleets" / self.fleet

    @property
    def inventory_path(self) -> Path:
        """`inventories/lab/hosts.yml` for the default fleet, so `-i inventories/lab` works as it is."""
        if self.fleet == DEFAULT_FLEET:
            return self.project.root / "inventories" / "lab" / "hosts.yml"
        return self.fleet_state_dir / "hosts.yml"

    @property
    def known_hosts_path(self) -> Path:
        return self.fleet_state_dir / "known_hosts"

    # -- queries ---------------------------------------------------------------------------------
    def _containers(self) -> list[Any]:
        """The fleet's hosts (its registry, also labelled with the fleet, has no index)."""
        found = self.client.containers.list(all=True, filters={"label": [f"{LABEL_FLEET}={self.fleet}", LABEL_INDEX]})
        return sorted(found, key=lambda c: int(c.labels.get(LABEL_INDEX, "0")))

    def _as_host(self, container: Any) -> LabHost:
        container.reload()
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = networks.get(self.network_name, {}).get("IPAddress", "")
        return LabHost(name=container.attrs["Config"]["Hostname"], container=container.name,
                       address=address, state=container.status, debian=self._release(container),
                       cpus=self._cpus(container))

    @property
    def machine_cpus(self) -> int:
        """The Docker engine's CPUs."""
        if self._machine_cpus is None:
            self._machine_cpus = int(self.client.info()["NCPU"])
        return self._machine_cpus

    def _cpus(self, container: Any) -> str:
        """The CPUs a host's container is kept on (all: any of the machine's)."""
        cpuset = str(container.attrs["HostConfig"].get("CpusetCpus") or "")
        return (validate_cpus(cpuset, self.machine_cpus) or "all") if cpuset else "all"

    @staticmethod
    def _release(container: Any) -> int:
        """The Debian release a host runs, from its label (a host started before hosts had one runs 12)."""
        return int(container.labels.get(LABEL_DEBIAN, DEFAULT_DEBIAN))

    def hosts(self) -> list[LabHost]:
        return [self._as_host(c) for c in self._containers()]

    # -- up --------------------------------------------------------------------------------------
    def up(self, count: int, debian: str = str(DEFAULT_DEBIAN), cpus: str | None = None) -> list[LabHost]:
        """Hosts 1..count on the Debian releases `debian` names (see host_releases): a host of another release,
        or of an older host image, is replaced; the others are kept. `cpus` (see validate_cpus): the machine's
        CPUs every host is kept on, changed on running hosts in place (a benchmark's load client can then have
        the others: `deploy bench --client controller --client-cpus`)."""
        validate_host_count(count)
        releases = host_releases(debian, count)
        cpus = validate_cpus(cpus, self.machine_cpus)
        self._ensure_ssh_key()
        builder = ImageBuilder(self.project, self.client)
        images = {release: builder.ensure_host_image(DEBIAN_RELEASES[release]) for release in sorted(set(releases))}
        self._ensure_network()
        existing = {int(c.labels[LABEL_INDEX]): c for c in self._containers()}
        move = cpus is not None  # not given: running hosts keep theirs, new hosts take the fleet's first's
        if cpus is None:
            cpus = next((self._cpus(c) for c in existing.values()), "all")
        for index, container in existing.items():
            if index > count:
                log.info("removing %s (fleet shrinks to %d hosts)", container.name, count)
                container.remove(v=True, force=True)
        started = []
        for index, release in enumerate(releases, start=1):
            image = images[release]
            container = existing.get(index)
            if container is not None and self._release(container) != release:
                log.info("replacing %s: Debian %d, not %d", container.name, self._release(container), release)
                container.remove(v=True, force=True)
                container = None
            elif container is not None and container.attrs["Config"]["Image"] != image:
                log.info("replacing %s: built from an older host image", container.name)
                container.remove(v=True, force=True)
                container = None
            if container is None:
                log.info("starting lab host %s (Debian %d)", self.host_name(index), release)
                container = self._run_host(image, index, release, cpus)
            else:
                if move and self._cpus(container) != cpus:
                    log.info("keeping %s on CPUs %s", container.name, cpus)
                    self._move_cpus(container, cpus)
                if container.status != "running":
                    log.info("starting stopped lab host %s", self.host_name(index))
                    container.start()
            started.append(container)
        hosts = [self._wait_booted(c) for c in started]
        self._authorize(started)
        self._write_known_hosts(started, hosts)
        self._write_inventory(hosts)
        self._ensure_secrets()
        for host in hosts:
            self._wait_ssh(host)
        log.info("lab fleet %s: %d hosts reachable over SSH; inventory %s", self.fleet, len(hosts),
                 self.inventory_path)
        return hosts

    def _ensure_ssh_key(self) -> None:
        """Make the lab's key pair once. Several `deploy lab up` may run at once (the test suite's molecule
        scenarios do): a lock file makes the first one create it and the others wait and use it."""
        key = self.project.ssh_key
        if key.exists():
            return
        key.parent.mkdir(parents=True, exist_ok=True)
        key.parent.chmod(0o700)
        with open(key.parent / ".keygen.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if key.exists():
                return
            tmp = key.parent / f".{key.name}.{os.getpid()}"
            for leftover in (tmp, tmp.with_name(tmp.name + ".pub")):
                leftover.unlink(missing_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploykit-lab", "-f", str(tmp)],
                           check=True, stdin=subprocess.DEVNULL)
            os.replace(tmp.with_name(tmp.name + ".pub"), key.with_name(key.name + ".pub"))
            os.replace(tmp, key)

    def _ensure_network(self) -> None:
        if not self.client.networks.list(names=[self.network_name]):
            self.client.networks.create(self.network_name, driver="bridge",
                                        labels={LABEL_FLEET: self.fleet})

    def _run_host(self, image: str, index: int, release: int, cpus: str = "all") -> Any:
        api = self.client.api
        host_config = api.create_host_config(
            network_mode=self.network_name,
            **({} if cpus == "all" else {"cpuset_cpus": cpus}),
            mounts=[Mount(target="/var/lib/docker", source=None, type="volume")],
            **HOST_CONFIG_OPTIONS,
        )
        host_config.update(HOST_CONFIG_UNCONFINED_PATHS)
        try:
            created = api.create_container(
                image, name=self.container_name(index), hostname=self.host_name(index),
                labels={LABEL_FLEET: self.fleet, LABEL_INDEX: str(index), LABEL_DEBIAN: str(release)},
                host_config=host_config,
                networking_config=api.create_networking_config({self.network_name: api.create_endpoint_config()}),
            )
            api.start(created["Id"])
            return self.client.containers.get(created["Id"])
        except docker.errors.APIError as exc:
            raise DeployError(f"cannot start lab host {self.host_name(index)}: {exc.explanation}",
                              hint="`deploy lab down` removes a half-started fleet; see docs/lab.md") from exc

    def _move_cpus(self, container: Any, cpus: str) -> None:
        """Keep a host on other CPUs, in place. Its own containers' cpusets are child cgroups of its own, each a
        subset of its parent's (cgroup v1 refuses a parent a change that a child would leave outside it): first
        everything widens to old + new (the host, then its cgroups from the top down), then narrows to new (its
        cgroups from the deepest up, then the host)."""
        every = set(range(self.machine_cpus))
        old, new = (every if text == "all" else cpu_set(text) for text in (self._cpus(container), cpus))
        try:
            for step, top_down in ((old | new, True), (new, False)):
                text = cpu_text(step)
                if top_down:
                    container.update(cpuset_cpus=text)
                if container.status == "running":
                    # find lists parents first; with -depth, children first. cgroup v2 has no such rule (and no
                    # /sys/fs/cgroup/cpuset): nothing to do in the host there
                    order = "" if top_down else "-depth "
                    external.exec_in(container, ["sh", "-c", f"find /sys/fs/cgroup/cpuset -mindepth 1 {order}-type d "
                                                 f"2>/dev/null | while read -r d; do echo {text} > "
                                                 f"\"$d/cpuset.cpus\" || exit 1; done"])
                if not top_down:
                    container.update(cpuset_cpus=text)
        except docker.errors.APIError as exc:
            raise DeployError(f"cannot keep lab host {container.name} on CPUs {cpus}: {exc.explanation}",
                              hint="`deploy lab up --cpus all` gives it every CPU again; `deploy lab down` and up "
                                   "starts it afresh") from exc
        container.reload()

    def _wait_booted(self, container: Any) -> LabHost:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running":
                break
            if b"lab-boot: ready" in container.logs():
                return self._as_host(container)
            time.sleep(0.3)
        tail = container.logs(tail=20).decode(errors="replace")
        raise DeployError(f"lab host {container.name} did not boot (state {container.status}):\n{tail}",
                          hint="`docker logs " + container.name + "` shows its boot log")

    def _authorize(self, containers: list[Any]) -> None:
        public_key = self.project.ssh_key.with_suffix(".pub").read_text(encoding="utf-8").strip()
        home = f"/home/{SSH_USER}/.ssh"
        script = (f"printf '%s\\n' '{public_key}' > {home}/authorized_keys && "
                  f"chown {SSH_USER}:{SSH_USER} {home}/authorized_keys && chmod 0600 {home}/authorized_keys")
        for container in containers:
            external.exec_in(container, ["sh", "-c", script])

    def _write_known_hosts(self, containers: list[Any], hosts: list[LabHost]) -> None:
        lines = []
        for container, host in zip(containers, hosts, strict=True):
            key = external.exec_in(container, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).split()
            lines.append(f"{host.address} {key[0]} {key[1]}")
        self.known_hosts_path.parent.mkdir(parents=True, exist_ok=True)
        self.known_hosts_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def write_inventory(self) -> None:
        """Rewrite the fleet's inventory from its running hosts (and its registry, when one runs)."""
        self._write_inventory(self.hosts())

    def _write_inventory(self, hosts: list[LabHost]) -> None:

        document = inventory_document(hosts, self.project.ssh_key, self.known_hosts_path, self.fleet)
        document["all"]["vars"].update(LabRegistry(self.project, self.client, self.fleet).inventory_vars())
        self.inventory_path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# Written by `deploy lab up` for lab fleet {self.fleet!r}; rewritten on every run.\n"
        self.inventory_path.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        shared_vars = self.project.root / "inventories" / "lab" / "group_vars"
        link = self.inventory_path.parent / "group_vars"
        if link != shared_vars and not link.exists():
            link.symlink_to(shared_vars)  # every fleet gets the lab group_vars

    @property
    def secrets_path(self) -> Path:
        return self.project.root / "inventories" / "lab" / "group_vars" / "all" / "secrets.yml"

    def _ensure_secrets(self) -> None:
        """Random secrets for the lab (the production inventory keeps its own in a vault)."""
        if self.secrets_path.exists():
            return
        document = {"postgres_app_password": secrets.token_urlsafe(24), "app_secret_key": secrets.token_urlsafe(48)}
        self.secrets_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.secrets_path.with_name(f".{self.secrets_path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o600)
        tmp.write_text("---\n# Generated by `deploy lab up`: local only, never committed.\n"
                       + yaml.safe_dump(document), encoding="utf-8")
        try:  # another `deploy lab up` running at the same time may have written it first: keep theirs
            os.link(tmp, self.secrets_path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()

    def ssh_command(self, host: LabHost, *remote: str) -> list[str]:
        return ["ssh", "-i", str(self.project.ssh_key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=5", f"{SSH_USER}@{host.address}", *remote]

    def _wait_ssh(self, host: LabHost, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            result = external.run(self.ssh_command(host, "true"), f"ssh to {host.name}", 30, capture_output=True,
                                  text=True)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DeployError(f"cannot SSH to lab host {host.name} ({host.address}): {result.stderr.strip()}",
                                  hint="`deploy lab down && deploy lab up` recreates the fleet")
            time.sleep(0.5)

    # -- down ------------------------------------------------------------------------------------
    def down(self) -> int:

        LabRegistry(self.project, self.client, self.fleet).down()
        containers = self._containers()
        for container in containers:
            log.info("removing lab host %s and its volumes", container.name)
            container.remove(v=True, force=True)
        for network in self.client.networks.list(names=[self.network_name]):
            network.remove()
        for path in (self.inventory_path, self.known_hosts_path):
            path.unlink(missing_ok=True)
        return len(containers)
