"""Questions about an inventory, asked before any host is: its web hosts and their addresses, a host pattern
(--limit), the lab fleet it belongs to, the short name its local state is kept under."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from deploy_tool import external
from deploy_tool.errors import DeployError

# an Ansible host pattern's characters: names, globs, ~regexes, `,` `:` `!` `&`; no spaces, quotes or braces
LIMIT = re.compile(r"[A-Za-z0-9_.*?\[\]^$+()|\\~!&,:-]+")


def inventory_slug(inventory: Path) -> str:
    digest = hashlib.sha256(str(inventory.resolve()).encode()).hexdigest()[:10]
    return f"{inventory.stem}-{digest}"


def check_limit(limit: str | None) -> None:
    """An Ansible host pattern (--limit) checked before any host is asked, as Ansible itself will read it: split
    by Ansible's own splitter, every character but the separators must be in its parts (Ansible drops a `[` or
    `]` that closes nothing: `~[` became `~`, which matched every host), and each `~` part (after `!` or `&`) must
    be a regular expression that compiles."""
    if limit is None:
        return
    if not limit.strip() or not LIMIT.fullmatch(limit):
        raise DeployError(f"--limit {limit!r} is not a host pattern",
                          hint="host names, groups, globs (web-*) or ~REGEX, separated by commas; !x excludes, &x "
                               "intersects")
    from ansible.inventory.manager import split_host_pattern

    parts = [str(part) for part in split_host_pattern(limit)]
    if re.sub(r"[,:]", "", "".join(parts)) != re.sub(r"[,:]", "", limit):
        raise DeployError(f"--limit {limit!r}: Ansible would read it as {','.join(parts)!r} (a bracket that closes "
                          "nothing is dropped)", hint="close every [ ] and ( ) of the pattern")
    for part in parts:
        part = part.lstrip("!&")
        if part.startswith("~"):
            try:
                re.compile(part[1:])
            except re.error as exc:
                raise DeployError(f"--limit {limit!r}: {part!r} is not a regular expression ({exc})",
                                  hint="after ~ comes a Python regular expression, e.g. ~web-[12]") from exc
            if not part[1:]:
                raise DeployError(f"--limit {limit!r}: an empty ~ expression matches every host",
                                  hint="after ~ comes a Python regular expression, e.g. ~web-[12]")

def web_addresses(inventory: Path, limit: str | None = None) -> dict[str, str]:
    """{host: address} of the inventory's web group (ansible-inventory resolves any inventory format)."""
    check_limit(limit)
    argv = [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(inventory), "--list"]
    if limit:
        argv += ["--limit", limit]
    env = {**os.environ, "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True", "ANSIBLE_NOCOLOR": "True"}
    result = external.run(argv, f"ansible-inventory -i {inventory}", 120, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        reasons = [line.strip() for line in result.stderr.splitlines() if "failed" in line.lower()]
        raise DeployError(f"ansible-inventory could not read {inventory}: "
                          f"{(reasons[0] if reasons else result.stderr.strip())[-400:]}",
                          hint="check the inventory's YAML (ansible-inventory -i INVENTORY --list shows it)")
    data = json.loads(result.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    return {host: str(hostvars.get(host, {}).get("ansible_host", host)) for host in group_hosts(data, "web")}


def group_hosts(data: dict[str, Any], group: str) -> list[str]:
    """The hosts of `group` in ansible-inventory's --list, its child groups' included, each once, in order."""
    found: list[str] = []
    for host in data.get(group, {}).get("hosts", []):
        if host not in found:
            found.append(host)
    for child in data.get(group, {}).get("children", []):
        found += [host for host in group_hosts(data, child) if host not in found]
    return found


def fleet_of(inventory: Path) -> str:
    """The lab fleet an inventory belongs to (the registry is the lab's own)."""
    path = inventory / "hosts.yml" if inventory.is_dir() else inventory
    try:
        fleet = yaml.safe_load(path.read_text(encoding="utf-8"))["all"]["vars"]["deploykit_lab_fleet"]
    except (OSError, KeyError, TypeError) as exc:
        raise DeployError(f"{inventory} is not a lab fleet inventory: --image-source registry uses the lab registry",
                          hint="for other fleets set app_image_source=registry and app_registry in the inventory")\
            from exc
    return str(fleet)
