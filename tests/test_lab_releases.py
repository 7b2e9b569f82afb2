"""Lab hosts of Debian 12 and 13: one host image per release. No Docker engine: the engine is a stand-in that
records what deploykit asks of it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import docker.errors

from deploy_tool.images import ImageBuilder, base_image
from deploy_tool.project import Project


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
    assert "postgresql" in images.builds[1]["buildargs"]["PREFETCH_PACKAGES"]
    assert builder.ensure_host_image("trixie") == trixie and len(images.builds) == 2  # built once
