"""A canary rollout (`deploy --canary N|P%`): the release goes to a first batch of hosts, the canary. Its smoke
benchmark is judged against the release before it on the same hosts (the gate of every deploy) and, in the same
run and moment, against the hosts still on the old release: the fair comparison on noisy hardware, as both sides
share the moment's noise. Only when it passes do the other hosts follow, batch by batch (--batch), each gated
the same way against the hosts not reached yet.

A batch that fails its gate stops the rollout: the hosts that got the release go back to the one before (not
with --no-gate-rollback), the hosts after them never run it; the audit log has each batch, the rollback and a
`canary` line saying where the rollout stopped, and `deploy` exits 3 (CanaryStopped).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from deploy_tool.bench import SmokeRecord, SmokeStore
from deploy_tool.deploy import BATCH, DeployRequest
from deploy_tool.errors import DeployError, GateStopped
from deploy_tool.flow import Checks, DeployReport, GateFailed, Stage, release_fleet_lock, run_deploy, web_hosts
from deploy_tool.journal import DeployLock, audit, audited_releases
from deploy_tool.playbook import ProgressCallback
from deploy_tool.project import Project


class CanaryStopped(GateFailed, GateStopped):
    """A batch of a canary rollout failed its smoke benchmark: the rollout stopped there (exit 3)."""


def count_of(size: str, total: int) -> int:
    """Hosts in a batch of `size` (a number, or a percentage of `total` rounded up, at least 1)."""
    if size.endswith("%"):
        return max(1, math.ceil(total * int(size[:-1]) / 100))
    return int(size)


def plan(hosts: list[str], canary: str, batch: str) -> list[list[str]]:
    """The rollout's batches, in the inventory's order: the canary's hosts, then the rest by `batch` (its
    percentage, as Ansible's serial, of the whole fleet)."""
    if not BATCH.fullmatch(canary):
        raise DeployError(f"invalid canary {canary!r}", hint="a number of hosts (--canary 1) or a percentage (10%)")
    first = count_of(canary, len(hosts))
    if first >= len(hosts):
        raise DeployError(f"a canary of {first} of the {len(hosts)} hosts leaves none on the old release to "
                          "compare it with", hint="give the canary fewer hosts than the deploy has (--canary 1)")
    size = count_of(batch, len(hosts))
    rest = hosts[first:]
    return [hosts[:first]] + [rest[start:start + size] for start in range(0, len(rest), size)]


def serving_release(project: Project, request: DeployRequest) -> dict[str, Any]:
    """The release every host serves before the rollout (the audit log's last deploy or rollback of the app):
    the canary's control. Refused when there is none, or when the last one may have left the fleet mixed."""
    audited = audited_releases(project, request.inventory, request.app)
    if not audited:
        raise DeployError(f"no release of {request.app} was deployed to {request.inventory} from this controller: "
                          "a canary is compared with the release the other hosts serve",
                          hint="deploy the first release without --canary")
    last = audited[-1]
    if last.get("result") != "ok":
        raise DeployError(f"the last {last.get('action', 'deploy')} of {request.app} ({last['version']}, "
                          f"{last.get('at', '?')}) ended {last.get('result')}: the hosts may not all serve one "
                          "release to compare the canary with",
                          hint="`deploy rollback` (or a deploy without --canary) brings every host to one release")
    return last


def run_canary(request: DeployRequest, checks: Checks, canary: str, project: Project, emit: ProgressCallback,
               docker_client: Callable[[], Any] = lambda: None) -> DeployReport:
    """Everything is checked before any host is touched: the request, the checks, the batches and the release
    the other hosts serve; then one lock is held over every batch."""
    request.validate(project)
    checks.validate()
    if checks.smoke is None:
        raise DeployError("a canary is judged by its smoke benchmark: --canary cannot run with --no-smoke")
    hosts = list(web_hosts(request))
    batches = plan(hosts, canary, request.batch)
    old = serving_release(project, request)
    report = DeployReport("deploy", request.version)
    report.canary = {"before": old["version"], "batches": []}
    summary: dict[str, Any] = {"action": "canary", "inventory": str(request.inventory), "app": request.app,
                               "version": request.version, "variant": request.variant, "before": old["version"],
                               "batches": [list(batch) for batch in batches], "result": "interrupted"}
    emit(f"canary rollout of {request.version} in {len(batches)} batches: "
         + "; ".join(", ".join(batch) for batch in batches) + f" (the others serve {old['version']})")
    done: list[str] = []
    with DeployLock.acquire(project, request.inventory, "deploy", request.version) as lock:
        try:
            for index, batch in enumerate(batches):
                name = "canary" if index == 0 else f"batch {index + 1} of {len(batches)}"
                later = tuple(host for rest in batches[index + 1:] for host in rest)
                stage = Stage(name, control=later or tuple(done), control_release=old["version"] if later
                              else request.version, first=index == 0, last=not later)
                emit(f"{name}: {', '.join(batch)}")
                try:
                    part = run_deploy(replace(request, limit=",".join(batch), batch="100%"),
                                      replace(checks, gate=replace(checks.gate, rollback=False)), project, emit,
                                      "deploy", docker_client, inside_lock=True, stage=stage)
                except GateFailed as exc:
                    merge(report, name, batch, exc.report)
                    stop(report, summary, request, checks, old, done + batch, batches, name, project, emit,
                         docker_client)
                except DeployError as exc:
                    summary.update(result="failed", stopped_at=name, error=exc.message, reached=done + batch)
                    never = [host for later in batches[index + 1:] for host in later]
                    exc.message += (f"\nthe canary rollout stopped at its {name} ({', '.join(batch)})"
                                    + (f"; {', '.join(done)} serve {request.version}" if done else "")
                                    + (f"; {', '.join(never)} never ran it" if never else ""))
                    raise
                merge(report, name, batch, part)
                done += batch
                if request.pause and not stage.last:
                    emit(f"pause of {request.pause} s before the next batch")
                    time.sleep(request.pause)
            keep_smoke(project, request, report, checks)
            summary["result"] = "ok"
        finally:
            audit(project, summary)
            release_fleet_lock(project, request.lock_run(), lock.token, emit)  # its lock is never a nested one
    return report


def merge(report: DeployReport, name: str, batch: list[str], part: DeployReport) -> None:
    """A batch's report into the rollout's."""
    report.swaps.update(part.swaps)
    report.recap.update(part.recap)
    for phase, seconds in part.phases.items():
        report.phases[phase] = round(report.phases.get(phase, 0.0) + seconds, 2)
    smoke = part.smoke or {}
    assert report.canary is not None
    report.canary["batches"].append({"name": name, "hosts": batch, "verdict": smoke.get("verdict"),
                                     "findings": part.findings, "smoke": smoke, "report_html": part.report_html})
    report.smoke_table += [f"{name} ({', '.join(batch)}):"] + [f"  {line}" for line in part.smoke_table]
    report.findings += part.findings
    report.load = part.load or report.load
    report.report_html = part.report_html or report.report_html
    if smoke:
        hosts = {**(report.smoke or {}).get("hosts", {}), **smoke.get("hosts", {})}
        report.smoke = {**smoke, "hosts": hosts, "verdict": "regressed" if report.findings else "passed"}


def stop(report: DeployReport, summary: dict[str, Any], request: DeployRequest, checks: Checks,
         old: dict[str, Any], reached: list[str], batches: list[list[str]], name: str, project: Project,
         emit: ProgressCallback, docker_client: Callable[[], Any]) -> None:
    """A batch failed its gate: roll the hosts reached back to the old release (unless told not to), say where the
    rollout stopped, and raise CanaryStopped."""
    never = [host for batch in batches for host in batch if host not in reached]
    detail = "\n".join(f"  {line}" for line in report.findings)
    summary.update(result="stopped", stopped_at=name, reached=reached, never=never, findings=report.findings)
    report.result = "regressed"
    where = f"the canary rollout of {request.version} stopped at its {name}"
    untouched = f"; {', '.join(never)} never ran it" if never else ""
    if not checks.gate.rollback:
        raise CanaryStopped(f"{where}: its smoke benchmark failed:\n{detail}\n{', '.join(reached)} still serve "
                            f"{request.version} (--no-gate-rollback){untouched}",
                            hint=f"`deploy rollback --limit {','.join(reached)}` returns them to {old['version']}",
                            report=report)
    emit(f"{where}: rolling {', '.join(reached)} back to {old['version']}")
    rollback = replace(request, version=old["version"], variant=old["variant"], limit=",".join(reached),
                       batch="100%")
    run_deploy(rollback, Checks(smoke=None, gate=checks.gate, report=False), project, emit, "rollback",
               docker_client, inside_lock=True)
    report.rolled_back_to = old["version"]
    report.result = "rolled-back"
    summary.update(result="rolled-back", rolled_back_to=old["version"])
    raise CanaryStopped(f"{where}: its smoke benchmark failed:\n{detail}\n{', '.join(reached)} rolled back to "
                        f"{old['version']}{untouched}",
                        hint="see the smoke table above; the threshold is --gate-threshold", report=report)


def keep_smoke(project: Project, request: DeployRequest, report: DeployReport, checks: Checks) -> None:
    """Every host's smoke of the rollout as one record of the release: the next release's baseline on each."""
    if not report.smoke or checks.smoke is None:
        return
    SmokeStore(project, request.inventory).save(SmokeRecord(
        release=request.version, variant=request.variant, app=request.app, load=vars(checks.smoke).copy(),
        hosts=report.smoke["hosts"], baseline_release=report.smoke.get("baseline")))

