"""`deploy bench --matrix`: every server setup on the same fleet under the same load, in one table.

For each entry (a variant, optionally with processes x threads), the release is deployed with the recreate
strategy (entries may speak different protocols), then every host benchmarks itself (or the controller
benchmarks it: --client controller) through nginx and, when the variant speaks HTTP and the client is on the host,
the app server directly. At the end the setup deployed before is restored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deploy_tool.appspec import load_given
from deploy_tool.bench import (
    COLUMNS,
    NOISE_FLOOR,
    SPREAD,
    BenchLoad,
    BenchResult,
    bars_with_rounds,
    check_client,
    fleet_summary,
    fleet_totals,
    format_table,
    measure,
    noise_band,
    pyplot,
    summary_table,
)
from deploy_tool.deploy import DeployRequest
from deploy_tool.errors import DeployError
from deploy_tool.inventory import inventory_slug
from deploy_tool.journal import DeployLock, current_release
from deploy_tool.playbook import ProgressCallback
from deploy_tool.project import Project
from deploy_tool.secrets import password_file
from deploy_tool.variants import load_variants

ENTRY = re.compile(r"^(?P<variant>[a-z0-9-]+)(:(?P<processes>[1-9][0-9]?)x(?P<threads>[1-9][0-9]?))?$")
MAX_WORKERS = 64  # as deploy --processes and --threads
# Beside every variant at its defaults, uWSGI with 3 processes x 3 threads on both of its protocols.
EXTRA_ENTRIES = ("uwsgi:3x3", "uwsgi-http:3x3")


@dataclass(frozen=True)
class MatrixEntry:
    variant: str
    processes: int | None = None
    threads: int | None = None

    @property
    def label(self) -> str:
        return self.variant + (f" {self.processes}x{self.threads}" if self.processes else "")


def parse_entries(project: Project, text: str | None, eventlet: bool = True) -> list[MatrixEntry]:
    """`uwsgi,uwsgi:3x3,gunicorn-gevent` -> entries; None -> every variant the app's image can run (those with a
    venv of their own need build.eventlet: `eventlet`), and the uWSGI 3x3 setups."""
    variants = load_variants(project)
    runnable = [name for name, spec in variants.items() if eventlet or not spec.get("venv")]
    words = [w.strip() for w in text.split(",") if w.strip()] if text else [*runnable, *EXTRA_ENTRIES]
    entries = []
    for word in words:
        match = ENTRY.fullmatch(word)
        if not match or match["variant"] not in variants:
            raise DeployError(f"bad matrix entry {word!r}",
                              hint=f"VARIANT or VARIANT:PROCESSESxTHREADS; variants: {', '.join(variants)}")
        entry = MatrixEntry(match["variant"], int(match["processes"]) if match["processes"] else None,
                            int(match["threads"]) if match["threads"] else None)
        if (entry.processes or 1) > MAX_WORKERS or (entry.threads or 1) > MAX_WORKERS:
            raise DeployError(f"bad matrix entry {word!r}: processes and threads must be 1-{MAX_WORKERS}",
                              hint="checked before the matrix starts, not when the entry's turn comes")
        entries.append(entry)
    return entries


def progress_bar(done: int, total: int, width: int = 24) -> str:
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def interleaved(entries: list[MatrixEntry], repeats: int) -> list[tuple[int, int]]:
    """(round, entry index) in the order they run: every setup once per round, rounds one after the other (A B C A
    B C ...), so that a slow minute of the machine falls on every setup alike, not on one setup's rounds."""
    return [(number, index) for number in range(repeats) for index in range(len(entries))]


def run_matrix(base: DeployRequest, entries: list[MatrixEntry], load: BenchLoad, project: Project,
               emit: ProgressCallback, deploy: Any, repeats: int = 1) -> dict[str, Any]:
    """`deploy(request)` deploys one setup (the caller's deploy flow, without smoke or report). Each of the
    `repeats` rounds deploys and measures every setup in turn; every round's figures are kept."""
    variants = load_variants(project)
    measured: list[list[dict[str, dict[str, dict[str, Any]]]]] = [[] for _ in entries]
    steps = interleaved(entries, repeats)
    started = time.time()
    for step, (number, index) in enumerate(steps):
        entry = entries[index]
        label = entry.label + (f" (round {number + 1} of {repeats})" if repeats > 1 else "")
        emit(f"{progress_bar(step, len(steps))} {label}: deploying")
        deploy(replace(base, variant=entry.variant, strategy="recreate", processes=entry.processes,
                       threads=entry.threads))
        emit(f"{progress_bar(step, len(steps))} {label}: benchmarking ({load.label()})")
        measured[index].append(measure(project, base.inventory, load, base.limit,
                                       direct=load.from_host and variants[entry.variant]["protocol"] == "http",
                                       spec=base.spec))
    emit(f"{progress_bar(len(steps), len(steps))} done in {time.time() - started:.0f} s")
    rows = [matrix_row(entry, target, variants[entry.variant]["protocol"], rounds)
            for entry, rounds in zip(entries, measured, strict=True) for target in ("nginx", "direct")]
    matrix = {"release": base.version, "app": base.app, "load": vars(load).copy(), "repeats": repeats,
              "spread": SPREAD, "order": [entries[index].label for _, index in steps], "rows": rows,
              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - started, 1)}
    matrix["result"] = stated_result(matrix)
    return matrix


def matrix_row(entry: MatrixEntry, target: str, protocol: str,
               rounds: list[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """One setup and target: the fleet's median and spread, each host's, and every round's figures."""
    per_round = [{host: targets[target] for host, targets in measured.items() if target in targets}
                 for measured in rounds]
    hosts = {host: found[target] for host, found in summary_table(rounds).items() if target in found}
    return {"setup": entry.label, "variant": entry.variant, "processes": entry.processes, "threads": entry.threads,
            "target": target, "protocol": protocol, "fleet": fleet_summary(per_round), "hosts": hosts,
            "rounds": [{"fleet": fleet_totals(hosts_of) or None, "hosts": hosts_of} for hosts_of in per_round]}


def stated_result(matrix: dict[str, Any]) -> str:
    """The best setup through nginx against the runner-up, by the fleet's median req/s: how much more it serves,
    or no clear winner when the difference is within the noise band (the larger of their spreads, at least
    NOISE_FLOOR percent)."""
    ranked = sorted((row for row in matrix["rows"] if row["target"] == "nginx" and row["fleet"]),
                    key=lambda row: row["fleet"]["rps"], reverse=True)
    if len(ranked) < 2:
        return "one setup measured: nothing to compare it with"
    (best, first), (second, runner_up) = ((row["fleet"], row["setup"]) for row in ranked[:2])
    if not second["rps"]:
        return f"{first} serves {best['rps']} req/s, {runner_up} served none"
    more = 100.0 * (best["rps"] - second["rps"]) / second["rps"]
    measured = [s for s in (best.get("rps_spread"), second.get("rps_spread")) if s is not None]
    spreads = (f"spread {measured[0]:g}% and {measured[1]:g}%" if len(measured) == 2 else
               f"spread not measured: one round each, --repeats 3 measures it; the band is {NOISE_FLOOR:g}%")
    said = f"{first} serves {more:.0f}% more than {runner_up} ({spreads})"
    return said if more > noise_band(*measured) else f"no clear winner: {said}, within the noise"


def bench_matrix(base: DeployRequest, version: str | None, variants: str | None, load: BenchLoad,
                 project: Project, emit: ProgressCallback, docker_client: Callable[[], Any],
                 repeats: int = 1) -> dict[str, Any]:
    """`deploy bench --matrix`: every entry checked first; the inventory's lock held from the first deploy to the
    restore, so no deploy slips in between; the setup deployed before restored in a finally, whatever stopped the
    matrix (a failed entry, an interrupt)."""
    from deploy_tool.flow import Checks, release_fleet_lock, run_deploy

    entries = parse_entries(project, variants, eventlet=base.spec["build.eventlet"])
    current = current_release(project, base.inventory, base.app)
    version = version or (current or {}).get("version")
    if not version:
        raise DeployError(f"{base.app} was not deployed to {base.inventory} yet: the matrix needs a release",
                          hint="name one with --version V (built with deploy build)")
    base = replace(base, version=version)
    for entry in entries:  # every entry is checked before the first is deployed
        replace(base, variant=entry.variant).validate(project)
    quiet = Checks(smoke=None, report=False)
    client = docker_client()

    def deploy(request: DeployRequest) -> None:
        run_deploy(request, quiet, project, lambda _: None, "bench", lambda: client, inside_lock=True)

    with DeployLock.acquire(project, base.inventory, "bench --matrix", version) as lock:
        try:
            return run_matrix(base, entries, load, project, emit, deploy, repeats)
        finally:
            try:
                if current:
                    emit(f"restoring {current['version']} ({current['variant']}, {current['app']})")
                    deploy(replace(base, version=current["version"], variant=current["variant"], strategy="recreate"))
            finally:  # the fleet's lock, taken by the first deploy with this lock's token (see run_deploy)
                release_fleet_lock(project, base.lock_run(), lock.token, emit)


def run_bench_matrix(project: Project, inventory: Path, load: BenchLoad, repeats: int, emit: ProgressCallback,
                     docker_client: Callable[[], Any], version: str | None = None, variants: str | None = None,
                     limit: str | None = None, app_dir: str | None = None,
                     vault_password_file: str | None = None) -> BenchResult:
    """`deploy bench --matrix` for the app in `app_dir` (as appspec.load_given; its vault password from
    `vault_password_file` when it has secrets): bench_matrix, its result kept (save_matrix)."""
    spec = load_given(app_dir)
    check_client(load, spec, direct=False)
    secrets = password_file(vault_password_file) if spec.needs_vault else None
    base = DeployRequest(inventory=inventory, version=version or "", spec=spec, limit=limit,
                         vault_password_file=secrets)
    matrix = bench_matrix(base, version, variants, load, project, emit, docker_client, repeats)
    return matrix_result(matrix, save_matrix(project, inventory, matrix))


def matrix_result(matrix: dict[str, Any], path: Path) -> BenchResult:
    """The matrix kept at `path` as `deploy bench --matrix` prints it: the table, the stated result, the files."""
    return BenchResult(matrix, [*matrix_table(matrix), matrix["result"],
                                f"matrix: {path} and {path.with_suffix('.png')} ({matrix['seconds']} s)"])


def matrix_table(matrix: dict[str, Any]) -> list[str]:
    """One row per setup and target: the fleet's medians (req/s summed over the hosts' medians, the worst host's
    latencies) and the spread of its req/s over the rounds (- with one round)."""
    rows = [(f"{row['setup']} ({row['target']})", row["fleet"]) for row in matrix["rows"]]
    return format_table(rows, first="setup (fleet)", columns=(*COLUMNS, "rps_spread"))


def save_matrix(project: Project, inventory: Path, matrix: dict[str, Any]) -> Path:
    """.deploykit/bench/<inventory>/matrix-<time>.json and .png (req/s and p99 per setup)."""
    folder = project.state_dir / "bench" / inventory_slug(inventory)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"matrix-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(matrix, indent=2) + "\n", encoding="utf-8")
    plot_matrix(matrix, stem.with_suffix(".png"))
    return stem.with_suffix(".json")


def plot_matrix(matrix: dict[str, Any], path: Path) -> None:
    """Per setup, the fleet's req/s and worst host's p99: bars at the medians, a dot for each round."""
    plt = pyplot()
    setups = list(dict.fromkeys(row["setup"] for row in matrix["rows"]))
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(12, 7), dpi=100)
    width = 0.4
    for offset, target, color in ((-width / 2, "nginx", "#4c8bbf"), (width / 2, "direct", "#ff7f0e")):
        rows = {row["setup"]: row for row in matrix["rows"] if row["target"] == target and row["fleet"]}
        shown = [s for s in setups if s in rows]
        xs = [setups.index(s) + offset for s in shown]
        for axis, figure_name in ((top, "rps"), (bottom, "p99_ms")):
            rounds = [[r["fleet"][figure_name] for r in rows[s].get("rounds", []) if r["fleet"]] for s in shown]
            bars_with_rounds(axis, xs, [rows[s]["fleet"][figure_name] for s in shown], rounds, width, color, target)
    top.set_ylabel("fleet req/s")
    bottom.set_ylabel("worst host p99 (ms)")
    bottom.set_xticks(range(len(setups)), setups, rotation=30, ha="right")
    rounds = matrix.get("repeats", 1)
    top.set_title(f"deploy bench --matrix: {matrix['app']} {matrix['release']}, {BenchLoad(**matrix['load']).label()}"
                  + (f", median of {rounds} rounds" if rounds > 1 else ""))
    for axis in (top, bottom):
        axis.legend(fontsize="small")
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
