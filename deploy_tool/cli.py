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


def build_deploy_parser() -> argparse.ArgumentParser:
    """`deploy [options]`: deploy a release to the fleet."""
    parser = argparse.ArgumentParser(
        prog="deploy", description="Deploy a release of the app to the fleet. Other commands: deploy COMMAND "
                                   "(lab, images, build, provision); deploy COMMAND --help.")
    parser.add_argument("--tool-version", action="version", version=f"deploykit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-i", "--inventory", default="lab", help="inventory name or path (default lab)")
    parser.add_argument("--version", required=True, help="the release to deploy (built with deploy build)")
    parser.add_argument("--variant", default="gunicorn-sync", help="server variant (apps/variants.yml)")
    parser.add_argument("--app", default="django", help="example app: django or flask")
    parser.add_argument("--strategy", default="reuse-port",
                        help="reuse-port (default: new beside old, zero failed requests) or recreate (stop, start)")
    parser.add_argument("--image-source", default="archive", choices=["archive", "registry"],
                        help="ship the image as a docker save archive (default) or through the lab registry")
    parser.add_argument("--limit", help="only these hosts (Ansible pattern)")
    add_rolling_options(parser)
    return parser


def add_rolling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", default="100%", help="hosts per batch: a number or a percentage (default 100%%)")
    parser.add_argument("--pause", type=int, default=0, help="seconds to wait between batches")
    parser.add_argument("--max-fail-percent", type=int, default=0,
                        help="stop when more than this share of a batch failed (default 0: at the first failure)")


def build_parser() -> argparse.ArgumentParser:
    """`deploy COMMAND ...`: everything but the deploy itself."""
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

    registry = commands.add_parser("registry", help="the lab fleet's container registry (TLS, on its network)")
    registry.add_argument("registry_command", choices=["up", "down", "status"], metavar="ACTION",
                          help="up, down or status")
    registry.add_argument("--fleet", default="lab", help="fleet name (default lab)")

    commands.add_parser("images", help="build the base and lab host images (cached)")

    rollback = commands.add_parser("rollback", help="return to the previous release (or --to V), reuse-port swap")
    rollback.add_argument("-i", "--inventory", default="lab", help="inventory name or path (default lab)")
    rollback.add_argument("--to", help="a release deployed there before (default: the one before the current)")
    rollback.add_argument("--limit", help="only these hosts (Ansible pattern)")
    add_rolling_options(rollback)

    build = commands.add_parser("build", help="build a release image of the example apps (offline build)")
    build.add_argument("--version", required=True, help="release version: the image tag")
    build.add_argument("--archive", action="store_true", help="also save it to .cache/releases/ (docker save)")
    build.add_argument("--rebuild", action="store_true", help="replace an existing release of that version")
    build.add_argument("--delay-ms", type=int, default=0, help=argparse.SUPPRESS)

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


def cmd_registry(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.lab import LabFleet, validate_fleet_name
    from deploy_tool.registry import LabRegistry

    client = docker_client()
    registry = LabRegistry(project, client, validate_fleet_name(args.fleet))
    if args.registry_command == "up":
        info = registry.up()
        LabFleet(project, client, args.fleet).write_inventory()
        emit(f"lab registry {info.endpoint} (controller pushes to 127.0.0.1:{info.loopback_port}); "
             "run `deploy provision` so hosts trust its CA")
    elif args.registry_command == "down":
        removed = registry.down()
        LabFleet(project, client, args.fleet).write_inventory()
        emit("lab registry removed" if removed else "no lab registry")
    else:
        info = registry.info()
        emit(f"lab registry {info.endpoint}, 127.0.0.1:{info.loopback_port}" if info else "no lab registry")
    return 0


def cmd_images(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.images import ImageBuilder

    tag = ImageBuilder(project, docker_client()).ensure_host_image()
    emit(f"lab host image: {tag}")
    return 0


def cmd_build(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.build import ReleaseBuilder, validate_version

    validate_version(args.version)
    builder = ReleaseBuilder(project, docker_client())
    emit(f"release image: {builder.build(args.version, delay_ms=args.delay_ms, rebuild=args.rebuild)}")
    if args.archive:
        emit(f"archive: {builder.save_archive(args.version)}")
    return 0


def cmd_provision(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.playbook import PlaybookRun, run_playbook

    inventory = project.inventory_dir(args.inventory)
    run = PlaybookRun("site.yml", inventory, limit=args.limit, check=args.check)
    outcome = run_playbook(run, project, emit)
    print_recap(outcome)
    return 0


def print_recap(outcome: Any) -> None:
    """Ansible's recap, one line per host: ok, changed, failed, unreachable, skipped."""
    emit("RECAP")
    for host, counts in outcome.recap().items():
        emit(f"  {host:12} " + " ".join(f"{k}={v}" for k, v in counts.items()))


def print_swaps(results: dict[str, dict[str, Any]]) -> None:
    """Per host: the container now serving, what it replaced, and when (seconds from the swap's start)."""
    for host, result in sorted(results.items()):
        timings = result.get("timings") or {}
        steps = " ".join(f"{step}={seconds}s" for step, seconds in timings.items())
        replaced = ", ".join(result.get("stopped") or []) or "nothing"
        emit(f"  {host:12} {result.get('container', '?')} (replaced {replaced}) {steps}".rstrip())


def cmd_deploy(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.deploy import DeployRequest

    request = DeployRequest(inventory=project.inventory_dir(args.inventory), version=args.version,
                            variant=args.variant, app=args.app, strategy=args.strategy, limit=args.limit,
                            image_source=args.image_source, batch=args.batch, pause=args.pause,
                            max_fail_percent=args.max_fail_percent)
    return run_deploy(request, project, "deploy")


def cmd_rollback(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.deploy import DeployRequest, previous_release

    inventory = project.inventory_dir(args.inventory)
    target = previous_release(project, inventory, args.to)
    emit(f"rolling back to {target['version']} ({target['variant']}, {target['app']}), "
         f"deployed {target['at']} by {target['user']}")
    request = DeployRequest(inventory=inventory, version=target["version"], variant=target["variant"],
                            app=target["app"], strategy="reuse-port", limit=args.limit, batch=args.batch,
                            pause=args.pause, max_fail_percent=args.max_fail_percent)
    return run_deploy(request, project, "rollback")


def run_deploy(request: Any, project: Project, action: str) -> int:
    """Validate, take the lock, run playbooks/deploy.yml, audit the result, report each host's swap."""
    from deploy_tool.build import ReleaseBuilder
    from deploy_tool.deploy import prepare
    from deploy_tool.journal import DeployLock, audit
    from deploy_tool.playbook import PlaybookFailed, run_playbook

    request.validate(project)  # before anything else, even before asking Docker
    run = prepare(request, project, ReleaseBuilder(project, docker_client()))
    entry = {"action": action, "inventory": str(request.inventory), "version": request.version,
             "variant": request.variant, "app": request.app, "strategy": request.strategy}
    with DeployLock.acquire(project, request.inventory, action, request.version):
        emit(f"{action}: {request.app} {request.version} ({request.variant}, strategy {request.strategy}, "
             f"batch {request.batch})")
        try:
            outcome = run_playbook(run, project, emit)
        except PlaybookFailed as exc:
            audit(project, {**entry, "result": "failed", "error": exc.message, "hosts": exc.outcome.results,
                            "failed_hosts": sorted({f.host for f in exc.outcome.failures})})
            raise
        audit(project, {**entry, "result": "ok", "hosts": outcome.results})
    emit("SWAPS")
    print_swaps(outcome.results)
    print_recap(outcome)
    return 0


HANDLERS = {"lab": cmd_lab, "registry": cmd_registry, "images": cmd_images, "build": cmd_build,
            "provision": cmd_provision, "deploy": cmd_deploy, "rollback": cmd_rollback}
COMMANDS = ("lab", "registry", "images", "build", "provision", "rollback")


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """A command word first selects that command; options first make a deploy."""
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--tool-version")):
        return build_parser().parse_args(argv)
    if argv and not argv[0].startswith("-"):
        build_parser().error(f"unknown command {argv[0]!r}: commands are {', '.join(COMMANDS)}; "
                             "a deploy takes options only (deploy --version V)")
    args = build_deploy_parser().parse_args(argv)
    args.command = "deploy"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
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
