"""The server variants: the one table the launcher (a copy in each image), the CLI and the app role read. It is
the app role's own (roles/app/vars/main/variants.yml): the role needs it, and a role must stand alone."""

from __future__ import annotations

from pathlib import Path

import yaml

from deploy_tool.errors import DeployError
from deploy_tool.project import Project

VARIANTS_FILE = Path("roles", "app", "vars", "main", "variants.yml")  # in the checkout
IMAGE_LABEL = "io.deploykit.variants"  # on a release image: the variants its launcher serves, comma-separated


def load_variants(project: Project) -> dict[str, dict[str, str]]:
    path: Path = project.root / VARIANTS_FILE
    variants: dict[str, dict[str, str]] = yaml.safe_load(path.read_text(encoding="utf-8"))["app_variants"]
    return variants


def validate_variant(project: Project, variant: str) -> dict[str, str]:
    variants = load_variants(project)
    if variant not in variants:
        raise DeployError(f"unknown server variant {variant!r}", hint=f"choose one of: {', '.join(variants)}")
    return variants[variant]


def check_image_serves(image: str, labels: dict[str, str] | None, variant: str) -> None:
    """A release image names the variants of the table its launcher was built with (IMAGE_LABEL, since
    2026-12-01): a variant this checkout has and the image's launcher has not is refused before any host is
    touched (the launcher would refuse it on each host). An image without the label is not checked."""
    served = (labels or {}).get(IMAGE_LABEL)
    if served and variant not in served.split(","):
        raise DeployError(f"release image {image} was built with an older variant table: its launcher serves "
                          f"{served.replace(',', ', ')}, not {variant}",
                          hint="build the release again with this checkout (deploy build --version V --rebuild), "
                               "or choose one of those")
