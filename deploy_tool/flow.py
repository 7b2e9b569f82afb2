"""A deploy or rollback from start to end, on the controller:

validate -> lock -> [swap-window load] -> playbooks/deploy.yml -> smoke benchmark -> performance gate
-> audit -> (automatic rollback when the gate fails) -> report.

Everything is checked before any host is touched; every outcome, failed ones too, is in the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from deploy_tool import fleetlock
from deploy_tool.bench import BenchLoad, Gate, SmokeRecord, SmokeStore, format_table, measure
from deploy_tool.build import ReleaseBuilder
from deploy_tool.deploy import DeployRequest, prepare
from deploy_tool.errors import DeployError
from deploy_tool.hooks import run_hook
from deploy_tool.inventory import web_addresses
from deploy_tool.journal import DeployLock, audit, previous_release
from deploy_tool.phases import Stopwatch, playbook_phases
from deploy_tool.playbook import PlaybookFailed, PlaybookRun, ProgressCallback, run_playbook
from deploy_tool.project import Project
from deploy_tool.report import SwapWatch, write_report


@dataclass(frozen=True)
class Checks:
    """What runs around the swap: the smoke benchmark (None: none), its gate, the swap-window report."""
    smoke: BenchLoad | None = field(default_factory=BenchLoad)
    gate: Gate = field(default_factory=Gate)
    report: bool = True

    def validate(self) -> None:
        if self.smoke is not None:
            self.smoke.validate()
        self.gate.validate()


@dataclass
class Stage:
    """One batch of a canary rollout (deploy_tool/canary.py): its name; its control, hosts benchmarked in the same
    run (those still on the old release; for the last batch, those that passed with the new one) and the release
    they serve; whether the app's hooks run around it (before_swap before the first batch, after_deploy after the
    last)."""
    name: str
    control: tuple[str, ...] = ()
    control_release: str = ""
    first: bool = True
    last: bool = True


@dataclass
class DeployReport:
    action: str
    version: str
    result: str = "ok"
    swaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    smoke: dict[str, Any] | None = None
    smoke_table: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    report_html: str | None = None
    load: dict[str, Any] | None = None
    rolled_back_to: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # where the time went, seconds (deploy_tool/phases.py)
    canary: dict[str, Any] | None = None  # a canary rollout's batches and verdicts (deploy_tool/canary.py)

    def as_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        if data["load"]:
            data["load"] = {k: v for k, v in data["load"].items() if k != "buckets"}
        return data


class GateFailed(DeployError):
    """The release failed its smoke benchmark; carries the report (and the rollback, if one ran)."""

    def __init__(self, message: str, hint: str, report: DeployReport) -> None:
        super().__init__(message, hint)
        self.report = report


def run_deploy(request: DeployRequest, checks: Checks, project: Project, emit: ProgressCallback,
               action: str = "deploy", docker_client: Callable[[], Any] = lambda: None,
               inside_lock: bool = False, stage: Stage | None = None) -> DeployReport:
    """docker_client: called once the request, the checks and the inventory are known to be good. stage: this
    deploy is one batch of a canary rollout (request.limit names its hosts)."""
    clock = Stopwatch()
    request.validate(project)  # before anything else, even before asking Docker
    checks.validate()
    addresses = web_hosts(request)
    entry = {"action": action, "inventory": str(request.inventory), "version": request.version,
             "variant": request.variant, "app": request.app, "strategy": request.strategy,
             **({"limit": request.limit} if request.limit else {}), **({"stage": stage.name} if stage else {})}
    report = DeployReport(action, request.version)
    # the controller's lock first (before an archive is written or an image pushed); the fleet's lock is taken by
    # the deploy playbook's first task with the same token, before any host is changed, and released at the end
    with DeployLock.acquire(project, request.inventory, action, request.version, nested=inside_lock) as lock:
        run = prepare(request, project, ReleaseBuilder(project, docker_client(), request.repository))
        clock.since("controller checks", clock.began)
        # the deploy playbook releases the fleet's lock itself as its last task when no playbook follows it
        last = checks.smoke is None and not lock.nested
        run = replace(run, extravars={**run.extravars, **fleetlock.take_vars(
            lock.token, fleetlock.holder(action, request.version), lock.stale_token),
            "deploykit_lock_release_at_end": last})
        released = False
        emit(f"{action}: {request.app} {request.version} ({request.variant}, strategy {request.strategy}, "
             f"batch {request.batch})")
        record = {**entry, "result": "interrupted"}  # what the audit line says if nothing better is known
        try:
            try:
                swap_and_check(run, report, record, request, checks, project, emit, addresses, clock, stage)
                released = last  # the playbook got to its end: its last task released the lock
            except BaseException as exc:
                if not isinstance(exc, PlaybookFailed):  # the swap's own failure is recorded by swap_and_check
                    record["error"] = f"{type(exc).__name__}: {exc}".rstrip(": ")
                raise
            finally:  # one line per deploy, whatever happened, even when interrupted
                audit(project, record)
            if report.findings:
                gate_failed(report, request, checks, project, emit, docker_client)
            if action in ("deploy", "rollback") and (stage is None or stage.last):
                run_hook(request.spec, f"after_{action}", emit, action=action, version=request.version,
                         inventory=str(request.inventory))
        finally:
            if not lock.nested and not released:
                release_fleet_lock(project, run, lock.token, emit)
    return report


def web_hosts(request: DeployRequest) -> dict[str, str]:
    """{host: address} of the deploy's web hosts: the inventory parses, and names some (within --limit)."""
    addresses = web_addresses(request.inventory, request.limit)
    if not addresses:
        raise DeployError(f"inventory {request.inventory} has no hosts in the group web"
                          + (f" matching --limit {request.limit}" if request.limit else ""),
                          hint="the deploy targets the group web (see inventories/production/hosts.yml)")
    return addresses


def release_fleet_lock(project: Project, run: PlaybookRun, token: str, emit: ProgressCallback) -> None:
    """Release the fleet's lock this deploy took (if it got that far). A failure to do so is said, not raised:
    it must not hide how the deploy went; the lock's lease frees the fleet anyway."""
    try:
        fleetlock.release(project, run.inventory, lambda _: None, token=token, like=run)
    except DeployError as exc:
        emit(f"warning: the fleet's lock was not released ({exc.message}); its lease ends in {fleetlock.LEASE} s, "
             "or: deploy lock release")


LAST_CHECK = "Check the release answers through nginx"  # playbooks/deploy.yml: after the swap


def swap_and_check(run: PlaybookRun, report: DeployReport, record: dict[str, Any], request: DeployRequest,
                   checks: Checks, project: Project, emit: ProgressCallback, addresses: dict[str, str],
                   clock: Stopwatch, stage: Stage | None = None) -> None:
    """The before_swap hook, the deploy playbook (with the swap-window load), the smoke benchmark and the report.
    `record` (the audit line) says what is known as soon as it is known: failed with the failed hosts, or ok
    with every host's swap once the playbook is done (then the release is live, whatever comes after)."""
    if stage is None or stage.first:
        run_hook(request.spec, "before_swap", emit, action=record["action"], version=request.version,
                 inventory=str(request.inventory))
    watch = None
    if checks.report:  # the app is loaded on its health path, with its own host name
        watch = SwapWatch(addresses, host_header=request.spec.server_names[0],
                          path=request.spec["server.health_path"], tls=request.spec["tls.source"] != "none")
        watch.start()
    try:
        outcome = run_playbook(run, project, emit)
    except PlaybookFailed as exc:
        failed = sorted({f.host for f in exc.outcome.failures})
        record.update(result="failed", error=exc.message, hosts=exc.outcome.results, failed_hosts=failed)
        if any(f.task == fleetlock.TAKE_TASK for f in exc.outcome.failures):  # nothing was changed
            record["result"] = "refused"
            exc.hint = ("wait for that deploy to end; `deploy lock status` shows the lock, `deploy lock release` "
                        "removes it when its deploy is gone (or its lease ends)")
        live = sorted({f.host for f in exc.outcome.failures if f.task == LAST_CHECK})
        if live:  # swapped already: the release serves there, whatever its answer through nginx was
            record["live_hosts"] = live
            exc.message += (f"\nrelease {request.version} is LIVE on {', '.join(live)}: its container was swapped in, "
                            "then its answer through nginx failed the deploy's last check")
            exc.hint = "`deploy rollback` returns those hosts to the previous release; " + (exc.hint or "")
        raise
    finally:
        if watch and watch.process and watch.process.poll() is None and report.load is None:
            report.load = watch.stop()
    record.update(result="ok", hosts=outcome.results)
    report.swaps, report.recap = outcome.results, outcome.recap()
    for name, seconds in playbook_phases(outcome).items():
        clock.add(name, seconds)
    if checks.smoke is not None:
        began = time.monotonic()
        smoke(report, request, checks, project, emit, gated=record["action"] == "deploy", stage=stage)
        clock.since("smoke benchmark", began)
    report.phases = clock.total()
    if report.load is not None:
        report.report_html = str(write_report(project, record["action"], request.version, report.load,
                                              report.swaps, report.smoke_table, report.phases))
    if report.findings:
        report.result = "regressed"
        record.update(result="regressed", findings=report.findings)


def smoke(report: DeployReport, request: DeployRequest, checks: Checks, project: Project, emit: ProgressCallback,
          gated: bool, stage: Stage | None = None) -> None:
    """Benchmark every host of the deploy at once (with a canary batch, its control hosts too, in the same run);
    store the results; judge them against the last release (and the control hosts)."""
    load = checks.smoke
    assert load is not None
    control = stage.control if stage else ()
    emit(f"smoke benchmark on every host ({load.label()})"
         + (f", with the hosts on {stage.control_release} as control: {', '.join(control)}" if stage and control
            else ""))

    def run(limit: str | None) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """(the deploy's hosts, the control hosts): each host's result through nginx."""
        measured = measure(project, request.inventory, load, ",".join(filter(None, (limit, *control))) or None,
                           emit=emit, spec=request.spec)
        through_nginx = {host: targets["nginx"] for host, targets in measured.items() if "nginx" in targets}
        return ({host: result for host, result in through_nginx.items() if host not in control},
                {host: result for host, result in through_nginx.items() if host in control})

    hosts, against = run(request.limit)
    record = SmokeRecord(release=request.version, variant=request.variant, app=request.app,
                         load=vars(load).copy(), hosts=hosts)
    store = SmokeStore(project, request.inventory)
    baseline = store.baseline(record)
    if gated:
        before = baseline.hosts if baseline else None

        def judge(results: dict[str, dict[str, Any]], others: dict[str, dict[str, Any]]) -> list[str]:
            """With a control (a canary batch): failed requests, then the comparisons with the control, which
            correct the one with the previous release for the moment's noise; else the gate against history."""
            if not (stage and others):
                return checks.gate.findings(results, before)
            return (replace(checks.gate, failures_only=True).findings(results, before)
                    + checks.gate.against_control(results, others, stage.control_release, before))

        record.findings = judge(hosts, against)
        suspects = sorted({line.split(":", 1)[0] for line in record.findings})
        if suspects:  # re-measure before judging: one slow run on a busy machine is not a regression
            emit(f"smoke benchmark again on {', '.join(suspects)} (a regression is confirmed by a second run)")
            again, again_control = run(",".join(suspects))
            cleared = {host for host, result in again.items() if not judge({host: result}, again_control)}
            hosts.update({host: again[host] for host in cleared})
            record.findings = [line for line in record.findings if line.split(":", 1)[0] not in cleared]
        record.verdict = "regressed" if record.findings else "passed"
    record.baseline_release = baseline.release if baseline else None
    store.save(record)
    report.smoke = {"release": record.release, "verdict": record.verdict, "baseline": record.baseline_release,
                    "hosts": hosts, "load": record.load, **({"control": against} if against else {})}
    report.smoke_table = format_table(sorted(hosts.items()))
    if against and stage:
        report.smoke_table += [f"control: hosts on {stage.control_release}, measured at the same time:"]
        report.smoke_table += format_table(sorted(against.items()))[1:]
    if baseline:
        report.smoke_table += [f"previous release {baseline.release}:"]
        report.smoke_table += format_table(sorted(baseline.hosts.items()))[1:]
    report.findings = record.findings


def gate_failed(report: DeployReport, request: DeployRequest, checks: Checks, project: Project,
                emit: ProgressCallback, docker_client: Callable[[], Any]) -> None:
    """The release regressed: roll back to the previous release (unless told not to) and fail."""
    detail = "\n".join(f"  {line}" for line in report.findings)
    if not checks.gate.rollback:
        raise GateFailed(f"release {request.version} failed its smoke benchmark:\n{detail}",
                         hint="it is still deployed (--no-gate-rollback); `deploy rollback` returns to the "
                              "previous release", report=report)
    try:  # this deploy is audited as regressed already: the rollback target is the last good release (the same
        # version with the setup it had, when this deploy was of the version already serving)
        target = previous_release(project, request.inventory, app=request.app)
    except DeployError as exc:
        raise GateFailed(f"release {request.version} failed its smoke benchmark:\n{detail}\nand there is no "
                         f"release to roll back to ({exc})", hint="deploy a release that passes", report=report) \
            from exc
    emit(f"release {request.version} failed its smoke benchmark; rolling back to {target['version']}")
    rollback = replace(request, version=target["version"], variant=target["variant"])
    run_deploy(rollback, Checks(smoke=checks.smoke, gate=checks.gate, report=False), project, emit, "rollback",
               docker_client, inside_lock=True)
    report.rolled_back_to = target["version"]
    report.result = "rolled-back"
    raise GateFailed(f"release {request.version} failed its smoke benchmark and was rolled back to "
                     f"{target['version']}:\n{detail}",
                     hint="see the smoke table above; the threshold is --gate-threshold", report=report)
