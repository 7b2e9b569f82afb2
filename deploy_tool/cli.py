"""The `deploy` command line: parse, call the core, print. Exits only here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy_tool import __version__
from deploy_tool.errors import DeployError
from deploy_tool.project import Project

if TYPE_CHECKING:  # the CLI imports the core lazily, per command (a fast `deploy --help`)
    from deploy_tool.deploy import DeployRequest
    from deploy_tool.flow import Checks, DeployReport
    from deploy_tool.playbook import RunOutcome

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
    parser.add_argument("--variant", help="server variant (roles/app/vars/main/variants.yml); default: deploykit.yml's "
                        "server.variant")
    add_project_options(parser)
    parser.add_argument("--strategy", default="reuse-port",
                        help="reuse-port (default: new beside old on one port, zero failed requests), recreate "
                             "(stop, start: the downtime baseline) or blue-green (new on a second port, nginx "
                             "switched and reloaded, old drained)")
    parser.add_argument("--image-source", default="archive", choices=["archive", "registry"],
                        help="ship the image as a docker save archive (default) or through the lab registry")
    parser.add_argument("--limit", help="only these hosts (Ansible pattern)")
    parser.add_argument("--processes", type=int, help="server processes (default: deploykit.yml's server.processes)")
    parser.add_argument("--threads", type=int, help="threads per process, for variants with threads (default: "
                                                    "server.threads)")
    parser.add_argument("--health-timeout", type=int,
                        help="seconds a new container has to pass its health gate (default: server.health_timeout)")
    add_rolling_options(parser)
    parser.add_argument("--canary", metavar="N|P%",
                        help="a canary rollout: these first hosts (a number or a percentage) get the release and "
                             "their smoke benchmark is judged against the hosts still on the old release, in the "
                             "same run; only then do the others follow, --batch at a time, each batch gated so; a "
                             "failing batch rolls back the hosts reached, the rest never run it (exit 3)")
    add_check_options(parser)
    return parser


def add_check_options(parser: argparse.ArgumentParser) -> None:
    """The smoke benchmark, its gate and the swap-window report, around a deploy or rollback."""
    group = parser.add_argument_group("after the swap: smoke benchmark and gate; during it: the swap report")
    group.add_argument("--no-smoke", action="store_true", help="skip the smoke benchmark (and its gate)")
    group.add_argument("--smoke-engine", choices=["wrk", "rate", "locust"], default="wrk",
                       help="wrk on each host (default), rate (open loop on each host) or locust (the Django "
                            "browse-form-POST scenario from the controller)")
    group.add_argument("--smoke-duration", type=int, default=5, help="seconds of load per host (default 5)")
    group.add_argument("--smoke-connections", type=int, default=16, help="wrk connections per host (default 16)")
    group.add_argument("--smoke-rate", type=int, default=0,
                       help="fixed rate in req/s per host (open loop, no coordinated omission) instead of wrk")
    group.add_argument("--smoke-path", default="/", help="path benchmarked through nginx (default /)")
    group.add_argument("--gate-threshold", type=float, default=50.0,
                       help="percent of req/s lost or p90 gained, against the previous release on the same host, "
                            "that fails the deploy (default 50); any failed request fails it too")
    group.add_argument("--gate-failures-only", action="store_true",
                       help="fail the deploy on failed smoke requests only; req/s and p90 are compared, not judged "
                            "(for a noisy lab; on quiet VMs keep the threshold)")
    group.add_argument("--no-gate-rollback", action="store_true",
                       help="when the gate fails, leave the release deployed (default: roll back)")
    group.add_argument("--no-swap-report", action="store_true",
                       help="no load through the swap and no HTML/PNG report")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (progress to stderr)")


def add_project_options(parser: argparse.ArgumentParser) -> None:
    """Which app: the deploykit.yml in --project DIR, or in the working directory."""
    parser.add_argument("--project", metavar="DIR",
                        help="the app's directory, with its deploykit.yml (default: this directory, when it has one)")
    parser.add_argument("--vault-password-file", metavar="FILE",
                        help="the vault password of the app's secrets file (default: $ANSIBLE_VAULT_PASSWORD_FILE, "
                             "else asked on a terminal)")


def add_rolling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", default="100%", help="hosts per batch: a number or a percentage (default 100%%)")
    parser.add_argument("--pause", type=int, default=0, help="seconds to wait between batches")
    parser.add_argument("--max-fail-percent", type=int, default=0,
                        help="stop when more than this share of a batch failed (default 0: at the first failure)")


def build_parser() -> argparse.ArgumentParser:
    """`deploy COMMAND ...`: everything but the deploy itself."""
    parser = argparse.ArgumentParser(
        prog="deploy", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Zero-downtime deploys of Python web apps.\n\n"
                    "The main job, from an app's directory (its deploykit.yml; or --project DIR):\n"
                    "  deploy [-i lab|production|PATH] --version V [--strategy reuse-port|recreate|blue-green]\n"
                    "         [--variant V] [--batch N|P%] [--no-smoke] [--gate-threshold P] ...\n"
                    "  (all its options: deploy --version V --help)\n\n"
                    "Other commands: deploy COMMAND --help.")
    parser.add_argument("--tool-version", action="version", version=f"deploykit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    lab = commands.add_parser("lab", help="the lab fleet: simulated hosts on this machine")
    lab_commands = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    lab_up = lab_commands.add_parser("up", help="start (or grow/shrink to) N lab hosts reachable over SSH")
    lab_up.add_argument("--hosts", type=int, default=3, help="number of hosts (default 3)")
    lab_up.add_argument("--debian", default="12", metavar="RELEASE[,RELEASE...]",
                        help="the hosts' Debian release: 12 (bookworm, the default) or 13 (trixie) for every host, "
                             "or a comma list with one per host for a mixed fleet (--hosts 3 --debian 12,12,13); "
                             "a running host of another release is replaced")
    lab_up.add_argument("--cpus", metavar="CPUS|all",
                        help="keep every host on these CPUs of this machine (as cpuset takes them: 1, 0-1), changed "
                             "in place on running hosts; a benchmark's client can then have the others (deploy "
                             "bench --client controller --client-cpus 0). all: any CPU. Default: as the fleet is")
    for sub in (lab_up, lab_commands.add_parser("down", help="remove the lab hosts and their volumes"),
                lab_commands.add_parser("status", help="list the lab hosts")):
        sub.add_argument("--fleet", default="lab", help="fleet name (default lab: inventories/lab)")
        sub.add_argument("--json", action="store_true", help="machine-readable output")

    registry = commands.add_parser("registry", help="the lab fleet's container registry (TLS, on its network)")
    registry.add_argument("registry_command", choices=["up", "down", "status"], metavar="ACTION",
                          help="up, down or status")
    registry.add_argument("--fleet", default="lab", help="fleet name (default lab)")

    commands.add_parser("images", help="build the base and lab host images of Debian 12 and 13 (cached)")

    init = commands.add_parser("init", help="write deploykit.yml for the app in this directory (detected)")
    init.add_argument("directory", nargs="?", default=".", help="the app's directory (default: this one)")
    init.add_argument("--framework", choices=["django", "flask"], help="instead of what is detected")
    init.add_argument("--wsgi", help="the WSGI entry, module:attribute or module:factory()")
    init.add_argument("--django-settings", help="Django's settings module")
    init.add_argument("--requirements", help="requirements.txt or pyproject.toml (a path in the app)")
    init.add_argument("--name", help="the app's name (default: the directory's)")
    init.add_argument("--python", help="3.13 (Debian 13 base, the default) or 3.11 (Debian 12)")
    init.add_argument("--force", action="store_true", help="replace a deploykit.yml that differs (kept as .bak)")
    init.add_argument("--print", action="store_true", help="print the file instead of writing it")

    secrets = commands.add_parser("secrets", help="the app's vault-encrypted secrets (ansible-vault)")
    secrets.add_argument("secrets_command", choices=["edit", "view"], metavar="ACTION",
                         help="edit (creates the file when missing) or view")
    add_project_options(secrets)

    rollback = commands.add_parser("rollback", help="return to the previous release (or --to V), reuse-port swap")
    rollback.add_argument("-i", "--inventory", default="lab", help="inventory name or path (default lab)")
    rollback.add_argument("--to", help="a release deployed there before (default: the one before the current)")
    rollback.add_argument("--limit", help="only these hosts (Ansible pattern)")
    add_project_options(rollback)
    add_rolling_options(rollback)
    add_check_options(rollback)

    bench = commands.add_parser("bench", help="benchmark the fleet as deployed, or every server setup (--matrix)")
    bench.add_argument("-i", "--inventory", default="lab", help="inventory name or path (default lab)")
    bench.add_argument("--limit", help="only these hosts (Ansible pattern)")
    bench.add_argument("--matrix", action="store_true",
                       help="deploy each server setup in turn (recreate) and benchmark it; restore the current one")
    bench.add_argument("--variants", help="matrix entries, e.g. uwsgi,uwsgi:3x3,gunicorn-gevent (default: all, "
                                          "and uWSGI 3x3 on both protocols)")
    bench.add_argument("--version", help="release for the matrix (default: the app's deployed one)")
    bench.add_argument("--direct", action="store_true", default=None,
                       help="also benchmark the app server directly (HTTP variants)")
    bench.add_argument("--duration", type=int, help="seconds of load per host and target (default 5)")
    bench.add_argument("--connections", type=int, help="wrk connections per host (default 16)")
    bench.add_argument("--rate", type=int, help="fixed rate in req/s per host (open loop) instead of wrk")
    bench.add_argument("--engine", choices=["wrk", "rate", "locust"],
                       help="wrk (default), rate (open loop), or locust (Django browse-form-POST, from the controller)")
    bench.add_argument("--client", choices=["host", "controller"],
                       help="where wrk or rate runs: on each host against its own nginx (default), or on this machine "
                            "against each host's address, taking no CPU time from the hosts measured")
    bench.add_argument("--client-cpus", metavar="CPUS",
                       help="with --client controller: keep the client on these CPUs of this machine (as taskset "
                            "takes them: 0, 0-1), e.g. the ones `deploy lab up --cpus` left to the controller")
    bench.add_argument("--users", type=int, help="locust users per host (default: --connections)")
    bench.add_argument("--locust-workers", type=int,
                       help="locust distributed mode: a master and this many worker processes per host")
    bench.add_argument("--path", help="path to load (default /)")
    bench.add_argument("--repeats", type=int,
                       help="rounds: the fleet (or, with --matrix, every setup in turn: A B C A B C ...) is measured "
                            "this many times; the median and the spread, (max-min)/median, are reported (default 1; "
                            "3 with --baseline or --compare)")
    kept = bench.add_mutually_exclusive_group()
    kept.add_argument("--baseline", metavar="NAME",
                      help="measure and keep the figures as baseline NAME (.deploykit/bench/<inventory>/baselines/)")
    kept.add_argument("--compare", metavar="NAME",
                      help="measure under baseline NAME's load and compare: per host and for the fleet, before, "
                           "after, change, noise band, verdict; exit 3 on a regression")
    add_project_options(bench)  # its host name is sent; the matrix deploys it
    bench.add_argument("--json", action="store_true", help="print the results as JSON (progress to stderr)")

    build = commands.add_parser("build", help="build a release image of the app (its deploykit.yml), offline")
    build.add_argument("--version", required=True, help="release version: the image tag")
    build.add_argument("--archive", action="store_true", help="also save it to .cache/releases/ (docker save)")
    build.add_argument("--rebuild", action="store_true", help="replace an existing release of that version")
    build.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                       help="bake an environment variable into this release's image (repeatable): a feature flag, "
                            "or a fault of a test release; the build's checks see build.env only")
    build.add_argument("--project", metavar="DIR",
                       help="the app's directory, with its deploykit.yml (default: this directory, when it has one)")

    provision = commands.add_parser("provision", help="run playbooks/site.yml: base, docker")
    provision.add_argument("-i", "--inventory", default="lab", help="inventory name or path (default lab)")
    provision.add_argument("--limit", help="only these hosts (Ansible pattern)")
    provision.add_argument("--check", action="store_true", help="dry run: report what would change")

    lock = commands.add_parser("lock", help="the fleet's deploy lock, on its first web host: status or release")
    lock.add_argument("lock_command", choices=["status", "release"], metavar="ACTION",
                      help="status (who holds it, since when, its lease) or release (whoever holds it: for a deploy "
                           "that is gone)")
    lock.add_argument("-i", "--inventory", default="lab", help="inventory name or path (default lab)")
    lock.add_argument("--json", action="store_true", help="machine-readable output")

    maintenance = commands.add_parser(
        "maintenance", help="maintenance mode: nginx answers the app's names with 503 and a page (health paths pass)")
    maintenance.add_argument("state", choices=["on", "off"], metavar="on|off")
    maintenance.add_argument("--message", help="the page's message, plain text (default: the nginx role's "
                                              "nginx_maintenance_message)")
    maintenance.add_argument("-i", "--inventory", default="lab", help="inventory name or path (default lab)")
    maintenance.add_argument("--limit", help="only these hosts (Ansible pattern)")
    maintenance.add_argument("--project", metavar="DIR",
                             help="only this app (its deploykit.yml); default: every app of the hosts")
    return parser


def cmd_lab(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.lab import LabFleet, host_releases, validate_fleet_name, validate_host_count

    validate_fleet_name(args.fleet)
    if args.lab_command == "up":
        host_releases(args.debian, validate_host_count(args.hosts))
    fleet = LabFleet(project, docker_client(), args.fleet)
    if args.lab_command == "up":
        hosts = fleet.up(args.hosts, args.debian, args.cpus)
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
            emit(f"{host.name:12} {host.state:10} {host.address:16} debian {host.debian:<3} cpus {host.cpus:<5} "
                 f"{host.container}")
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
        found = registry.info()
        emit(f"lab registry {found.endpoint}, 127.0.0.1:{found.loopback_port}" if found else "no lab registry")
    return 0


def cmd_images(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.images import DEBIAN_RELEASES, ImageBuilder

    builder = ImageBuilder(project, docker_client())
    for release, suite in DEBIAN_RELEASES.items():
        emit(f"lab host image, Debian {release} ({suite}): {builder.ensure_host_image(suite)}")
    return 0


def cmd_init(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.initapp import init

    result = init(Path(args.directory).resolve(), force=args.force, write=not args.print, python=args.python,
                  framework=args.framework, wsgi=args.wsgi, django_settings=args.django_settings,
                  requirements=args.requirements, name=args.name)
    if args.print:
        print(result.text, end="")
        return 0
    for line in result.detected.found:
        emit(f"found {line}")
    emit(f"{result.path}: {result.outcome}")
    if result.outcome != "unchanged":
        emit("next: deploy build --version 1.0.0, then deploy --version 1.0.0 (docs/deploykit-yml.md)")
    return 0


def cmd_secrets(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.appspec import load_given
    from deploy_tool.secrets import edit_secrets

    spec = load_given(args.project or ".")
    return edit_secrets(spec, args.secrets_command, vault_password_file(args, required=True))


def vault_password_file(args: argparse.Namespace, required: bool = False) -> Path | None:
    from deploy_tool.secrets import password_file

    return password_file(args.vault_password_file, required)


def cmd_build(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.appbuild import AppBuilder, parse_env
    from deploy_tool.appspec import load_given
    from deploy_tool.build import validate_version
    from deploy_tool.hooks import run_hook

    validate_version(args.version)
    env = parse_env(args.env)
    spec = load_given(args.project)
    run_hook(spec, "before_build", emit, action="build", version=args.version)
    app = AppBuilder(project, docker_client(), spec)
    emit(f"release image: {app.build(args.version, rebuild=args.rebuild, env=env)}")
    if args.archive:
        emit(f"archive: {app.releases.save_archive(args.version)}")
    return 0


def cmd_provision(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.playbook import PlaybookRun, run_playbook

    inventory = project.inventory_dir(args.inventory)
    run = PlaybookRun("site.yml", inventory, limit=args.limit, check=args.check)
    outcome = run_playbook(run, project, emit)
    print_recap(outcome)
    return 0


def cmd_lock(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool import fleetlock
    from deploy_tool.journal import audit

    inventory = project.inventory_dir(args.inventory)

    def quiet(_: str) -> None:  # the lock playbook's own progress lines say nothing more
        pass

    if args.lock_command == "status":
        host, held = fleetlock.status(project, inventory, quiet)
    else:
        host, held = fleetlock.release(project, inventory, quiet, force=True)
        if held:
            audit(project, {"action": "lock release", "inventory": str(inventory), "result": "ok",
                            "released": held.get("holder", {})})
    if args.json:
        print(json.dumps({"host": host, "lock": held, "released": args.lock_command == "release" and bool(held)}))
    elif not held:
        emit(f"the fleet's lock ({host}) is free" if args.lock_command == "status" else
             f"the fleet's lock ({host}) was free: nothing released")
    elif args.lock_command == "release":
        emit(f"released the fleet's lock ({host}), held by {fleetlock.describe(held)}")
    else:
        lease = "expired" if held["expired"] else f"ends in {held['seconds_left']} s"
        emit(f"the fleet's lock ({host}) is held by {fleetlock.describe(held)}; its lease {lease}")
    return 0


def cmd_maintenance(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.appspec import load_given
    from deploy_tool.journal import audit
    from deploy_tool.playbook import PlaybookFailed, PlaybookRun, run_playbook

    message = args.message
    if message is not None and (not message.strip() or len(message) > 2000):
        raise DeployError("--message must say something, in at most 2000 characters",
                          hint="e.g. --message 'Back at 10:00 UTC'")
    if message and any(mark in message for mark in ("{{", "{%", "{#")):  # Ansible would evaluate it as a template
        raise DeployError("--message may not hold {{, {% or {#", hint="write the message as plain text")
    inventory = project.inventory_dir(args.inventory)
    spec = load_given(args.project) if args.project else None
    said = {"nginx_maintenance_message": message} if message is not None else {}  # else the role's default
    run = PlaybookRun("maintenance.yml", inventory, limit=args.limit,
                      extravars={"nginx_maintenance": args.state, **said,
                                 "nginx_maintenance_app": spec.slot if spec else ""})
    entry = {"action": f"maintenance {args.state}", "inventory": str(inventory), "limit": args.limit,
             **({"app": spec.name} if spec else {})}
    try:
        outcome = run_playbook(run, project, emit)
    except PlaybookFailed as exc:
        audit(project, {**entry, "result": "failed", "error": exc.message, "hosts": exc.outcome.recap()})
        raise
    audit(project, {**entry, "result": "ok", "hosts": outcome.recap(),
                    **({"message": message} if args.state == "on" and message is not None else {})})
    print_recap(outcome)
    which = f"{spec.name}'s" if spec else "every app's"
    emit(f"maintenance mode is {args.state} on {len(outcome.recap())} host(s)" + (
        f": {which} names get 503 and the page; the health path still reaches the app" if args.state == "on" else ""))
    return 0


def print_recap(outcome: RunOutcome) -> None:
    for line in recap_lines(outcome.recap()):
        emit(line)


def recap_lines(recap: dict[str, dict[str, int]]) -> list[str]:
    """Ansible's recap, one line per host: ok, changed, failed, unreachable, skipped."""
    return ["RECAP"] + [f"  {host:12} " + " ".join(f"{k}={v}" for k, v in counts.items())
                        for host, counts in recap.items()]


def checks_of(args: argparse.Namespace) -> Checks:
    from deploy_tool.bench import BenchLoad, Gate, pick_engine
    from deploy_tool.flow import Checks

    engine = pick_engine(args.smoke_engine, args.smoke_rate)
    smoke = None if args.no_smoke else BenchLoad(engine=engine, duration=args.smoke_duration,
                                                 connections=args.smoke_connections, rate=args.smoke_rate or 100,
                                                 path=args.smoke_path)
    return Checks(smoke=smoke, gate=Gate(threshold=args.gate_threshold, rollback=not args.no_gate_rollback,
                                           failures_only=args.gate_failures_only),
                  report=not args.no_swap_report)


def cmd_deploy(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.appspec import load_given
    from deploy_tool.deploy import DeployRequest

    spec = load_given(args.project)
    request = DeployRequest(inventory=project.inventory_dir(args.inventory), version=args.version, spec=spec,
                            variant=args.variant or "", strategy=args.strategy, limit=args.limit,
                            image_source=args.image_source, batch=args.batch, pause=args.pause,
                            max_fail_percent=args.max_fail_percent, processes=args.processes,
                            threads=args.threads, health_timeout=args.health_timeout,
                            vault_password_file=vault_password_file(args) if spec.needs_vault else None)
    return run_deploy(request, checks_of(args), project, "deploy", args.json, canary=args.canary)


def cmd_rollback(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.appspec import load_given
    from deploy_tool.deploy import DeployRequest
    from deploy_tool.journal import previous_release

    inventory = project.inventory_dir(args.inventory)
    spec = load_given(args.project)
    target = previous_release(project, inventory, args.to, spec.name)
    say = progress_sink(args.json)
    say(f"rolling back to {target['version']} ({target['variant']}, {target['app']}; {target['reason']}), "
        f"recorded {target.get('at', '?')} by {target.get('user', '?')}")
    request = DeployRequest(inventory=inventory, version=target["version"], spec=spec, variant=target["variant"],
                            strategy="reuse-port", limit=args.limit, batch=args.batch, pause=args.pause,
                            max_fail_percent=args.max_fail_percent,
                            vault_password_file=vault_password_file(args) if spec.needs_vault else None)
    return run_deploy(request, checks_of(args), project, "rollback", args.json)


def progress_sink(as_json: bool) -> Callable[[str], None]:
    """Progress goes to stdout, or to stderr when stdout carries the JSON result."""
    if as_json:
        return lambda line: print(line, file=sys.stderr, flush=True)
    return emit


def run_deploy(request: DeployRequest, checks: Checks, project: Project, action: str, as_json: bool,
               canary: str | None = None) -> int:
    from deploy_tool.canary import run_canary
    from deploy_tool.flow import GateFailed
    from deploy_tool.flow import run_deploy as flow

    say = progress_sink(as_json)
    try:
        if canary:
            report = run_canary(request, checks, canary, project, say, docker_client)
        else:
            report = flow(request, checks, project, say, action, docker_client)
    except GateFailed as exc:
        print_report(exc.report, as_json, say)
        raise
    print_report(report, as_json, say)
    return 0


def print_report(report: DeployReport, as_json: bool, say: Callable[[str], None]) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, default=str), flush=True)
        return
    if report.swaps:
        say("SWAPS")
        for line in _swap_lines(report.swaps):
            say(line)
    for batch in (report.canary or {}).get("batches", []):
        say(f"CANARY {batch['name']} ({', '.join(batch['hosts'])}): {batch['verdict']}")
    if report.smoke_table:
        smoke = report.smoke or {}
        say(f"SMOKE BENCHMARK ({smoke.get('verdict', '')}, "
            f"compared with {smoke.get('baseline') or 'nothing: first of its kind'})")
        for line in report.smoke_table:
            say(f"  {line}")
    if report.load:
        load = report.load
        say(f"SWAP WINDOW: {load['requests']} requests, {load['failures']} failed, p99 {load['p99_ms']} ms; "
            f"report {report.report_html} (and swap.png)")
    for line in recap_lines(report.recap):
        say(line)
    if report.phases:
        from deploy_tool.phases import phases_line

        say(phases_line(report.phases))


def _swap_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for host, result in sorted(results.items()):
        timings = result.get("timings") or {}
        steps = " ".join(f"{step}={seconds}s" for step, seconds in timings.items())
        replaced = ", ".join(result.get("stopped") or []) or "nothing"
        lines.append(f"  {host:12} {result.get('container', '?')} (replaced {replaced}) {steps}".rstrip())
    return lines


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The load options given on `deploy bench`'s command line, by BenchLoad's field names (and `direct`)."""
    from deploy_tool.bench import pick_engine

    given = {"duration": args.duration, "connections": args.users or args.connections, "rate": args.rate,
             "path": args.path, "workers": args.locust_workers, "direct": args.direct, "client": args.client,
             "client_cpus": args.client_cpus,
             "engine": pick_engine(args.engine, args.rate or 0) if args.engine else None}
    return {name: value for name, value in given.items() if value is not None}


def cmd_bench(args: argparse.Namespace, project: Project) -> int:
    from deploy_tool.bench import BenchRequest, run_bench

    request = BenchRequest(inventory=project.inventory_dir(args.inventory), given=load_options(args),
                           limit=args.limit, repeats=args.repeats, baseline=args.baseline, compare=args.compare,
                           matrix=args.matrix, variants=args.variants, version=args.version, app_dir=args.project,
                           vault_password_file=args.vault_password_file)
    result = run_bench(request, project, progress_sink(args.json), docker_client)
    if args.json:
        print(json.dumps(result.document, indent=2))
    else:
        for line in result.lines:
            emit(line)
    if result.stopped:
        raise result.stopped
    return 0


HANDLERS = {"lab": cmd_lab, "registry": cmd_registry, "images": cmd_images, "build": cmd_build,
            "provision": cmd_provision, "deploy": cmd_deploy, "rollback": cmd_rollback, "bench": cmd_bench,
            "init": cmd_init, "secrets": cmd_secrets, "lock": cmd_lock, "maintenance": cmd_maintenance}
COMMANDS = ("init", "lab", "registry", "images", "build", "provision", "rollback", "bench", "secrets", "lock",
            "maintenance")


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
    project = Project.locate()
    project.state_dir.mkdir(parents=True, exist_ok=True)
    project.state_dir.chmod(0o700)  # keys, the audit log, runner folders: this user's only
    try:
        from deploy_tool.inventory import check_limit

        check_limit(getattr(args, "limit", None))  # every command's --limit, before anything else is asked
        return HANDLERS[args.command](args, project)
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("deploy: interrupted", file=sys.stderr)
        return 130
