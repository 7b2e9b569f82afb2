"""Where a deploykit checkout keeps its playbooks, its local state and its caches."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from deploy_tool.errors import DeployError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # an inventory under inventories/, by its folder's name


@dataclass(frozen=True)
class Project:
    """Paths of one checkout. Local state (keys, generated inventories) and caches are git-ignored."""

    root: Path

    @classmethod
    def locate(cls) -> Project:
        """The checkout this package was installed from, or DEPLOYKIT_ROOT when set."""
        override = os.environ.get("DEPLOYKIT_ROOT")
        if override:
            return cls(Path(override).resolve())
        return cls(Path(__file__).resolve().parent.parent)

    @property
    def state_dir(self) -> Path:
        return self.root / ".deploykit"

    @property
    def cache_dir(self) -> Path:
        return self.root / ".cache"

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def playbooks_dir(self) -> Path:
        return self.root / "playbooks"

    @property
    def load_client(self) -> Path:
        """The load client (run as a script on the controller; the deploykit_bench module's rate engine on a host)."""
        return self.root / "module_utils" / "deploykit_load.py"

    @property
    def ansible_cfg(self) -> Path:
        return self.root / "ansible.cfg"

    @property
    def host_image_dir(self) -> Path:
        return self.root / "lab" / "host-image"

    def inventory_dir(self, name: str) -> Path:
        """An inventory by name (`lab`, `production` under inventories/) or else by path."""
        if name.strip() in ("", ".", ".."):
            raise DeployError(f"{name!r} names no inventory", hint="-i lab, -i production, or the inventory's path")
        named = self.root / "inventories" / name
        if NAME.fullmatch(name) and named.exists():
            return named
        return Path(name).resolve()
