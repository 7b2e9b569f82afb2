"""A deploy: validated as a whole before any host is touched, then run as playbooks/deploy.yml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_tool.build import ReleaseBuilder, validate_version
from deploy_tool.errors import DeployError
from deploy_tool.playbook import PlaybookRun
from deploy_tool.project import Project
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
                "app_image_source": "archive", "app_image_archive_dir": str(archive_dir), "app_image_id": image_id,
                "deploykit_strategy": self.strategy}

    def playbook_run(self, archive_dir: Path, image_id: str) -> PlaybookRun:
        return PlaybookRun("deploy.yml", self.inventory, extravars=self.extravars(archive_dir, image_id),
                           limit=self.limit)


def prepare(request: DeployRequest, project: Project, builder: ReleaseBuilder) -> PlaybookRun:
    """Check everything the deploy needs on the controller; write the release archive; no host is touched."""
    request.validate(project)
    archive = builder.save_archive(request.version)  # fails with a hint when the release was never built
    return request.playbook_run(archive.parent, builder.image_id(request.version) or "")
