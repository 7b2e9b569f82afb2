"""A deploy: validated as a whole before any host is touched, then run as playbooks/deploy.yml."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deploy_tool import tls
from deploy_tool.appspec import AppSpec
from deploy_tool.build import ReleaseBuilder, validate_version
from deploy_tool.errors import DeployError
from deploy_tool.inventory import check_limit, fleet_of
from deploy_tool.playbook import PlaybookRun
from deploy_tool.project import Project
from deploy_tool.registry import LabRegistry
from deploy_tool.secrets import check_secrets
from deploy_tool.variants import check_image_serves, validate_variant

STRATEGIES = ("reuse-port", "recreate", "blue-green")
BATCH = re.compile(r"^([1-9][0-9]*|([1-9][0-9]?|100)%)$")


@dataclass(frozen=True)
class DeployRequest:
    """One deploy or rollback of an app (its deploykit.yml): the request's own options, else the app's settings."""

    inventory: Path
    version: str
    spec: AppSpec
    variant: str = ""  # empty: the app's server.variant
    strategy: str = "reuse-port"
    limit: str | None = None
    image_source: str = "archive"
    batch: str = "100%"
    max_fail_percent: int = 0
    pause: int = 0
    processes: int | None = None  # server processes (workers); None: the app's server.processes
    threads: int | None = None  # threads per process, where the variant has threads; None: the app's
    health_timeout: int | None = None  # seconds a new container has to pass its gate; None: the app's
    vault_password_file: Path | None = None  # decrypts the app's secrets file

    def __post_init__(self) -> None:
        for name, dotted in (("variant", "server.variant"), ("processes", "server.processes"),
                             ("threads", "server.threads"), ("health_timeout", "server.health_timeout")):
            if getattr(self, name) in (None, ""):
                object.__setattr__(self, name, self.spec[dotted])

    @property
    def app(self) -> str:
        return self.spec.name

    @property
    def repository(self) -> str:
        return self.spec.image_repository

    def validate(self, project: Project) -> None:
        validate_version(self.version)
        check_limit(self.limit)
        variant = validate_variant(project, self.variant)
        if variant.get("venv") and not self.spec["build.eventlet"]:
            raise DeployError(f"variant {self.variant} runs from a venv of its own ({variant['venv']}), which "
                              f"{self.spec.name}'s image has only when built with build.eventlet: true",
                              hint="set build.eventlet: true in deploykit.yml and build the release again, or "
                                   "choose another variant")
        if self.spec.secrets_path.exists():
            if self.vault_password_file is None:
                raise DeployError(f"{self.spec.secrets_path} holds the app's secrets: its vault password is needed",
                                  hint="give --vault-password-file FILE (or answer the prompt on a terminal)")
            check_secrets(self.spec.secrets_path, self.vault_password_file)  # decrypted in memory, never shown
        tls.check(self.spec, self.vault_password_file)
        if self.strategy not in STRATEGIES:
            raise DeployError(f"unknown strategy {self.strategy!r}", hint=f"choose one of: {', '.join(STRATEGIES)}")
        if not BATCH.fullmatch(self.batch):
            raise DeployError(f"invalid batch {self.batch!r}", hint="a number of hosts (1) or a percentage (30%)")
        if not 0 <= self.max_fail_percent <= 100 or not 0 <= self.pause <= 3600:
            raise DeployError("--max-fail-percent must be 0-100 and --pause 0-3600 seconds")
        for name, value in (("processes", self.processes), ("threads", self.threads)):
            if value is not None and not 1 <= value <= 64:
                raise DeployError(f"--{name} must be 1-64, not {value}")
        if self.health_timeout is not None and not 1 <= self.health_timeout <= 3600:
            raise DeployError(f"--health-timeout must be 1-3600 seconds, not {self.health_timeout}")
        if not self.inventory.exists():
            raise DeployError(f"inventory {self.inventory} does not exist",
                              hint="for the lab fleet run `deploy lab up --hosts 3` first")

    def extravars(self, archive_dir: Path, image_id: str) -> dict[str, Any]:
        return {**app_extravars(self.spec), "app_release": self.version, "app_server_variant": self.variant,
                "app_image_source": self.image_source, "app_image_archive_dir": str(archive_dir),
                "app_image_id": image_id, "app_strategy": self.strategy, "deploykit_batch": self.batch,
                "deploykit_max_fail_percentage": self.max_fail_percent, "deploykit_pause": self.pause,
                "app_server_processes": self.processes, "app_server_threads": self.threads,
                "app_health_timeout": self.health_timeout}

    def playbook_run(self, archive_dir: Path, image_id: str, project: Project) -> PlaybookRun:
        return replace(self.lock_run(), limit=self.limit, extravars={
            **self.extravars(archive_dir, image_id), **tls.extravars(project, self.spec)})

    def lock_run(self) -> PlaybookRun:
        """A run of the app's inventory with its vault settings (the app's secrets file and password), no more."""
        secrets = self.spec.secrets_path if self.spec.secrets_path.exists() else None
        return PlaybookRun("deploy.yml", self.inventory, vars_files=(secrets,) if secrets else (),
                           vault_password_file=self.vault_password_file if self.spec.needs_vault else None)


def app_extravars(spec: AppSpec) -> dict[str, Any]:
    """The app role's variables from an app's deploykit.yml (the request's own options, --variant and the like,
    are set apart and win)."""
    return {"app_name": spec.name, "app_image_repository": spec.image_repository, "app_server_names": spec.server_names,
            "app_health_path": spec["server.health_path"], "app_warmup_paths": spec["server.warmup"],
            "app_extra_env": spec["runtime.env"],
            "app_database": spec["runtime.database"], "app_release_command": spec["runtime.release_command"],
            "app_data_dir": spec["runtime.data_dir"], "app_static_files": True,
            **({"app_container_name": spec.slot, "app_port": spec["server.port"]} if spec["server.port"] else {})}


def prepare(request: DeployRequest, project: Project, builder: ReleaseBuilder) -> PlaybookRun:
    """Check everything the deploy needs on the controller; write the release archive; no host is touched."""
    request.validate(project)
    image_id = builder.image_id(request.version)
    if image_id is None:
        raise DeployError(f"release image {builder.image(request.version)} is not on this controller",
                          hint=f"build it first: deploy build --version {request.version}")
    check_image_serves(builder.image(request.version), builder.image_labels(request.version), request.variant)
    if request.image_source == "registry":
        LabRegistry(project, builder.client, fleet_of(request.inventory)).push(request.version, request.repository)
        return request.playbook_run(builder.archive_path(request.version).parent, image_id, project)
    archive = builder.save_archive(request.version)
    return request.playbook_run(archive.parent, image_id, project)
