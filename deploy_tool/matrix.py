"""`deploy bench --matrix`: every server setup on the same fleet under the same load, in one table.

For each entry (a variant, optionally with processes x threads), the release is deployed with the recreate
strategy (entries may speak different protocols), then every host benchmarks itself through nginx and, when
the variant speaks HTTP, the app server directly. At the end the setup deployed before is restored.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deploy_tool.bench import BenchLoad, format_table, measure
from deploy_tool.deploy import DeployRequest
from deploy_tool.errors import DeployError
from deploy_tool.inventory import inventory_slug
from deploy_tool.journal import DeployLock, current_release
from deploy_tool.playbook import ProgressCallback
from deploy_tool.project import Project
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


def fleet_totals(per_host: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fleet as one: requests per second summed, failures summed, the worst host's latencies."""
    if not per_host:
        return {}
    results = list(per_host.values())
    return {"hosts": len(results), "rps": round(sum(r["rps"] for r in results), 1),
            "failed": sum(r["failed"] for r in results),
            **{k: max(r[k] for r in results) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")}}


def run_matrix(base: DeployRequest, entries: list[MatrixEntry], load: BenchLoad, project: Project,
               emit: ProgressCallback, deploy: Any) -> dict[str, Any]:
    """`deploy(request)` deploys one setup (the caller's deploy flow, without smoke or report)."""
    variants = load_variants(project)
    rows: list[dict[str, Any]] = []
    started = time.time()
    for index, entry in enumerate(entries):
        emit(f"{progress_bar(index, len(entries))} {entry.label}: deploying")
        request = replace(base, variant=entry.variant, strategy="recreate", processes=entry.processes,
                          threads=entry.threads)
        deploy(request)
        direct = variants[entry.variant]["protocol"] == "http"
        emit(f"{progress_bar(index, len(entries))} {entry.label}: benchmarking ({load.label()})")
        per_host = measure(project, base.inventory, load, base.limit, direct=direct,
                           spec=base.spec)
        for target in ("nginx", "direct"):
            hosts = {h: t[target] for h, t in per_host.items() if target in t}
            rows.append({"setup": entry.label, "variant": entry.variant, "processes": entry.processes,
                         "threads": entry.threads, "target": target, "protocol": variants[entry.variant]["protocol"],
                         "fleet": fleet_totals(hosts) or None, "hosts": hosts})
    emit(f"{progress_bar(len(entries), len(entries))} done in {time.time() - started:.0f} s")
    return {"release": base.version, "app": base.app, "load": vars(load).copy(), "rows": rows,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - started, 1)}


def bench_matrix(base: DeployRequest, version: str | None, variants: str | None, load: BenchLoad,
                 project: Project, emit: ProgressCallback, docker_client: Callable[[], Any]) -> dict[str, Any]:
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
            return run_matrix(base, entries, load, project, emit, deploy)
        finally:
            try:
                if current:
                    emit(f"restoring {current['version']} ({current['variant']}, {current['app']})")
                    deploy(replace(base, version=current["version"], variant=current["variant"], strategy="recreate"))
            finally:  # the fleet's lock, taken by the first deploy with this lock's token (see run_deploy)
                release_fleet_lock(project, base.lock_run(), lock.token, emit)


def matrix_table(matrix: dict[str, Any]) -> list[str]:
    rows = [(f"{row['setup']} ({row['target']})", row["fleet"]) for row in matrix["rows"]]
    return format_table(rows, first="setup (fleet)")


def save_matrix(project: Project, inventory: Path, matrix: dict[str, Any]) -> Path:
    """.deploykit/bench/<inventory>/matrix-<time>.json and .png (req/s and p99 per setup)."""
    folder = project.state_dir / "bench" / inventory_slug(inventory)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"matrix-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(matrix, indent=2) + "\n", encoding="utf-8")
    plot_matrix(matrix, stem.with_suffix(".png"))
    return stem.with_suffix(".json")


def plot_matrix(matrix: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = list(dict.fromkeys(row["setup"] for row in matrix["rows"]))
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(12, 7), dpi=100)
    width = 0.4
    for offset, target, color in ((-width / 2, "nginx", "#4c8bbf"), (width / 2, "direct", "#ff7f0e")):
        values = {row["setup"]: row["fleet"] for row in matrix["rows"] if row["target"] == target and row["fleet"]}
        xs = [i + offset for i, s in enumerate(setups) if s in values]
        top.bar(xs, [values[s]["rps"] for s in setups if s in values], width, color=color, label=target)
        bottom.bar(xs, [values[s]["p99_ms"] for s in setups if s in values], width, color=color, label=target)
    top.set_ylabel("fleet req/s")
    bottom.set_ylabel("worst host p99 (ms)")
    bottom.set_xticks(range(len(setups)), setups, rotation=30, ha="right")
    top.set_title(f"deploy bench --matrix: {matrix['app']} {matrix['release']}, {BenchLoad(**matrix['load']).label()}")
    for axis in (top, bottom):
        axis.legend(fontsize="small")
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
