"""The server variants: the one table the launcher (a copy in each image), the CLI and the app role read. It is
the app role's own (roles/app/vars/main/variants.yml): the role needs it, and a role must stand alone."""

from __future__ import annotations

from pathlib import Path

import yaml

from deploy_tool.errors import DeployError
from deploy_tool.project import Project

VARIANTS_FILE = Path("roles", "app", "vars", "main", "variants.yml")  # in the checkout


def load_variants(project: Project) -> dict[str, dict[str, str]]:
    path: Path = project.root / VARIANTS_FILE
    variants: dict[str, dict[str, str]] = yaml.safe_load(path.read_text(encoding="utf-8"))["app_variants"]
    return variants


def validate_variant(project: Project, variant: str) -> dict[str, str]:
    variants = load_variants(project)
    if variant not in variants:
        raise DeployError(f"unknown server variant {variant!r}", hint=f"choose one of: {', '.join(variants)}")
    return variants[variant]
