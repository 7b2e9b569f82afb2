"""A deploy: validated as a whole before any host is touched, then run as playbooks/deploy.yml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_tool.build import ReleaseBuilder, validate_version
from deploy_tool.errors import DeployError
from deploy_tool.playbook import PlaybookRun
from deploy_tool.project import Project
from deploy_tool.registry import LabRegistry
from deploy_tool.variants import validate_variant

STRATEGIES = ("recreate",)
APPS = ("django", "flask")


@dataclass(frozen=True)
class DeployRequest:
    inventory: Path
    version: str
    variant: str = "gunicorn-sync"
    app: str = "django"
    strategy: str = "recreate"
    limit: str | None = None
    image_source: str = "archive"

    def validate(self, project: Project) -> None:
        validate_version(self.version)
        validate_variant(project, self.variant)
        if self.app not in APPS:
            raise DeployError(f"unknown app {self.app!r}", hint=f"choose one of: {', '.join(APPS)}")
        if self.strategy not in STRATEGIES:
            raise DeployError(f"unknown strategy {self.strategy!r}", hint=f"choose one of: {', '.join(STRATEGIES)}")
        if not self.inventory.exists():
            raise DeployError(f"inventory {self.inventory} does not exist",
                              hint="for the lab fleet run `deploy lab up --hosts 3` first")

    def extravars(self, archive_dir: Path, image_id: str) -> dict[str, Any]:
        return {"app_release": self.version, "app_server_variant": self.variant, "app_name": self.app,
                "app_image_source": self.image_source, "app_image_archive_dir": str(archive_dir),
                "app_image_id": image_id,
                "deploykit_strategy": self.strategy}

    def playbook_run(self, archive_dir: Path, image_id: str) -> PlaybookRun:
        return PlaybookRun("deploy.yml", self.inventory, extravars=self.extravars(archive_dir, image_id),
                           limit=self.limit)


def prepare(request: DeployRequest, project: Project, builder: ReleaseBuilder) -> PlaybookRun:
    """Check everything the deploy needs on the controller; write the release archive; no host is touched."""
    request.validate(project)
    image_id = builder.image_id(request.version)
    if image_id is None:
        raise DeployError(f"release image deploykit/demo-app:{request.version} is not on this controller",
                          hint=f"build it first: deploy build --version {request.version}")
    if request.image_source == "registry":
        LabRegistry(project, builder.client, fleet_of(request.inventory)).push(request.version)
        return request.playbook_run(builder.archive_path(request.version).parent, image_id)
    archive = builder.save_archive(request.version)
    return request.playbook_run(archive.parent, image_id)


def fleet_of(inventory: Path) -> str:
    """The lab fleet an inventory belongs to (the registry is the lab's own)."""
    import yaml

    path = inventory / "hosts.yml" if inventory.is_dir() else inventory
    try:
        fleet = yaml.safe_load(path.read_text(encoding="utf-8"))["all"]["vars"]["deploykit_lab_fleet"]
    except (OSError, KeyError, TypeError) as exc:
        raise DeployError(f"{inventory} is not a lab fleet inventory: --image-source registry uses the lab registry",
                          hint="for other fleets set app_image_source=registry and app_registry in the inventory")\
            from exc
    return str(fleet)
