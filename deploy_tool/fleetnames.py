"""The names of a lab fleet's Docker objects, in one place: its network, its hosts' containers, its labels.
deploy_tool/lab.py (the hosts) and deploy_tool/registry.py (the fleet's registry) both use them."""

from __future__ import annotations

DEFAULT_FLEET = "lab"
LABEL_FLEET = "io.deploykit.fleet"
LABEL_INDEX = "io.deploykit.index"
LABEL_ROLE = "io.deploykit.role"
LABEL_DEBIAN = "io.deploykit.debian"  # a lab host's Debian release (12, 13)


def network_name(fleet: str) -> str:
    """The fleet's own bridge network: its hosts and its registry are on it."""
    return f"deploykit-{fleet}"


def host_container_name(fleet: str, index: int) -> str:
    return f"deploykit-{fleet}-{index}"


def registry_container_name(fleet: str) -> str:
    return f"deploykit-{fleet}-registry"
