"""The server variants (apps/variants.yml): the one table the launcher, the CLI and the playbooks read."""

from __future__ import annotations

from pathlib import Path

import yaml

from deploy_tool.errors import DeployError
from deploy_tool.project import Project


def load_variants(project: Project) -> dict[str, dict[str, str]]:
    path: Path = project.root / "apps" / "variants.yml"
    variants: dict[str, dict[str, str]] = yaml.safe_load(path.read_text(encoding="utf-8"))["deploykit_variants"]
    return variants


def validate_variant(project: Project, variant: str) -> dict[str, str]:
    variants = load_variants(project)
    if variant not in variants:
        raise DeployError(f"unknown server variant {variant!r}", hint=f"choose one of: {', '.join(variants)}")
    return variants[variant]
