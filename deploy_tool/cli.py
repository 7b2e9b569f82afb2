"""The `deploy` command line: parse, call the core, print. Exits only here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from deploy_tool import __version__
from deploy_tool.errors import DeployError
from deploy_tool.project import Project

log = logging.getLogger("deploy_tool")


def docker_client() -> Any:
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise DeployError(f"no Docker engine answers on this machine ({exc})",
                          hint="run ./scripts/bootstrap: it installs docker.io and starts dockerd") from exc
    return client


def emit(line: str) -> None:
    print(line, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploy", description="Zero-downtime deploys of Python web apps.")
    parser.add_argument("--tool-version", action="version", version=f"deploykit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    lab = commands.add_parser("lab", help="the lab fleet: simulated hosts on this machine")
    lab_commands = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    lab_up = lab_commands.add_parser("up", help="start (or grow/shrink to) N lab hosts reachable over SSH")
    lab_up.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3)")
    for sub in (lab_up, lab_commands.add_parser("down", help="remove the lab hosts and their volumes"),
                lab_commands.add_parser("status", help="list the lab hosts")):
        sub.add_argument("--fleet", default="lab", help="fleet name (default lab: inventories/lab)")
        sub.add_argument("--json", action="store_true", help="machine-readable output")

    commands.add_parser("images", help="build the base and lab host images (cached)")

    provision = commands.add_parser("provision", help="run playbooks/site.yml: base, docker")
    provision.add_argument("-i", "--inventory", default="lab", help="inventory name or path (default lab)")
    provision.add_argument("--limit", help="only these hosts (Ansible pattern)")
    provision.add_argument("--check", action="store_true", help="dry run: report what would change")
    return parser


def cmd_lab(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.lab import LabFleet, validate_fleet_name, validate_host_count

    validate_fleet_name(args.fleet)
    if args.lab_command == "up":
        validate_host_count(args.hosts)
    fleet = LabFleet(project, docker_client(), args.fleet)
    if args.lab_command == "up":
        hosts = fleet.up(args.hosts)
    elif args.lab_command == "down":
        removed = fleet.down()
        if args.json:
            print(json.dumps({"fleet": args.fleet, "removed": removed}))
        else:
            emit(f"lab fleet {args.fleet}: removed {removed} hosts")
        return 0
    else:
        hosts = fleet.hosts()
    if args.json:
        print(json.dumps({"fleet": args.fleet, "inventory": str(fleet.inventory_path),
                          "ssh_key": str(project.ssh_key), "user": "deploykit",
                          "hosts": [vars(h) for h in hosts]}, indent=2))
    else:
        if not hosts:
            emit(f"lab fleet {args.fleet}: no hosts (start them with `deploy lab up --hosts 3`)")
        for host in hosts:
            emit(f"{host.name:12} {host.state:10} {host.address:16} {host.container}")
    return 0


def cmd_images(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.images import ImageBuilder

    tag = ImageBuilder(project, docker_client()).ensure_host_image()
    emit(f"lab host image: {tag}")
    return 0


def cmd_provision(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.playbook import PlaybookRun, run_playbook

    inventory = project.inventory_dir(args.inventory)
    run = PlaybookRun("site.yml", inventory, limit=args.limit, check=args.check)
    outcome = run_playbook(run, project, emit)
    emit("RECAP")
    for host, counts in outcome.recap().items():
        emit(f"  {host:12} " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


HANDLERS = {"lab": cmd_lab, "images": cmd_images, "provision": cmd_provision}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="deploykit: %(message)s", stream=sys.stderr)
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    try:
        return HANDLERS[args.command](args, Project.locate())
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deploy: interrupted", file=sys.stderr)
        return 130
