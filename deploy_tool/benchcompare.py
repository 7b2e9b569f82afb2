"""`deploy bench --baseline NAME` and `deploy bench --compare NAME`: the fleet measured before an upgrade and after
it, and a verdict per host and for the fleet that tells a regression from the noise.

Both sides are measured in rounds (`--repeats`, 3 by default); each side's figure is the median of its rounds and
its spread (bench.SPREAD) says how much the same fleet moved from round to round. A change is judged only beyond
the noise band: the larger of the two sides' spreads, at least bench.NOISE_FLOOR percent. Baselines are kept per
inventory as .deploykit/bench/<inventory>/baselines/NAME.json; each comparison as
.deploykit/bench/<inventory>/compare/<time>-NAME.json and .png.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploy_tool.appspec import load_optional
from deploy_tool.bench import (
    NOISE_FLOOR,
    P90_FLOOR_MS,
    SPREAD,
    BenchLoad,
    BenchResult,
    Rounds,
    bars_with_rounds,
    fleet_summary,
    fleet_totals,
    format_table,
    load_of,
    measure_rounds,
    noise_band,
    pyplot,
    summarize,
)
from deploy_tool.errors import DeployError, GateStopped
from deploy_tool.inventory import inventory_slug
from deploy_tool.journal import host_releases
from deploy_tool.playbook import ProgressCallback
from deploy_tool.project import Project

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
COMPARE_COLUMNS = ("rps before", "rps after", "rps change", "p90 before", "p90 after", "p90 change", "rps band",
                   "p90 band", "verdict")


class BenchRegressed(GateStopped):
    """`deploy bench --compare`: a host or the fleet is slower than its baseline beyond the noise (exit 3)."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Baseline:
    """The fleet measured under a name: the load, and per host what it ran and its result in each round (None in a
    round it did not answer)."""
    name: str
    inventory: str
    app: str | None  # the app whose host name was sent (its deploykit.yml), None: the inventory's names
    load: dict[str, Any]
    direct: bool
    repeats: int
    hosts: dict[str, dict[str, Any]]  # {host: {"runs": {release, variant, app, at} | None, "rounds": [...]}}
    limit: str | None = None
    at: str = field(default_factory=now)
    spread: str = SPREAD

    @classmethod
    def measured(cls, name: str, inventory: Path, app: str | None, load: BenchLoad, direct: bool, rounds: Rounds,
                 serving: dict[str, dict[str, Any]], limit: str | None = None) -> Baseline:
        hosts = sorted({host for measured in rounds for host in measured})
        return cls(name, str(inventory), app, vars(load).copy(), direct, len(rounds),
                   {host: {"runs": serving.get(host), "rounds": [measured.get(host) for measured in rounds]}
                    for host in hosts}, limit)

    def rounds(self) -> Rounds:
        return [{host: kept["rounds"][number] for host, kept in self.hosts.items()
                 if number < len(kept["rounds"]) and kept["rounds"][number]} for number in range(self.repeats)]

    def bench_load(self) -> BenchLoad:
        return load_of(self.load)

    def load_for(self, given: dict[str, Any]) -> tuple[BenchLoad, bool]:
        """The load of a comparison: the baseline's (and its --direct); the options `given` (BenchLoad's field names
        and `direct`) must say the same, or the two measurements would not be comparable."""
        recorded = {**vars(self.bench_load()), "direct": self.direct}
        differ = [f"{name} {value} (the baseline's: {recorded.get(name)})" for name, value in sorted(given.items())
                  if recorded.get(name) != value]
        if differ:
            raise DeployError(f"baseline {self.name} was measured under another load: {', '.join(differ)}",
                              hint=f"leave the load options out: --compare takes the baseline's "
                                   f"({self.bench_load().label()}{', and --direct' if self.direct else ''})")
        return self.bench_load(), self.direct

    def check_app(self, app: str | None) -> None:
        """The comparison must load the same site: the same app's host name (None: the inventory's names)."""
        if app != self.app:
            raise DeployError(f"baseline {self.name} loaded {self.app or 'the inventory (no app)'}, this comparison "
                              f"would load {app or 'the inventory (no app)'}",
                              hint="run it where the baseline was taken: the same --project DIR, or none")


class BaselineStore:
    """.deploykit/bench/<inventory>/baselines/NAME.json, and the comparisons in .../compare/."""

    def __init__(self, project: Project, inventory: Path) -> None:
        folder = project.state_dir / "bench" / inventory_slug(inventory)
        self.folder = folder / "baselines"
        self.compare_folder = folder / "compare"

    @staticmethod
    def check_name(name: str) -> None:
        if not NAME.fullmatch(name):
            raise DeployError(f"bad baseline name {name!r}",
                              hint="letters, digits, '.', '_' and '-' (up to 64, a letter or digit first), no path: "
                                   "e.g. before-1.4")

    def path(self, name: str) -> Path:
        self.check_name(name)
        return self.folder / f"{name}.json"

    def names(self) -> list[str]:
        return sorted(path.stem for path in self.folder.glob("*.json")) if self.folder.is_dir() else []

    def save(self, baseline: Baseline) -> Path:
        path = self.path(baseline.name)
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(asdict(baseline), indent=2) + "\n", encoding="utf-8")
        partial.replace(path)  # whole or not at all
        return path

    def load(self, name: str) -> Baseline:
        path = self.path(name)
        if not path.is_file():
            known = self.names()
            raise DeployError(f"no baseline {name!r} for this inventory ({self.folder})",
                              hint=f"baselines kept: {', '.join(known)}" if known else
                              "take one first: deploy bench --baseline NAME (before the upgrade)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known_fields = {f.name for f in fields(Baseline)}
            return Baseline(**{k: v for k, v in data.items() if k in known_fields})
        except (ValueError, TypeError, AttributeError) as exc:
            raise DeployError(f"baseline {path} is damaged ({exc})",
                              hint=f"take it again: deploy bench --baseline {name}") from exc

    def save_comparison(self, comparison: Comparison) -> Path:
        """compare/<time>-NAME.json and its plot, <time>-NAME.png, beside it; returns the JSON's path."""
        self.compare_folder.mkdir(parents=True, exist_ok=True)
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{comparison.baseline}"  # a name may have dots: no with_suffix
        path = self.compare_folder / f"{stem}.json"
        path.write_text(json.dumps(comparison.as_dict(), indent=2) + "\n", encoding="utf-8")
        plot_comparison(comparison, self.compare_folder / f"{stem}.png")
        return path


def change(before: float, after: float) -> float | None:
    """after against before, in percent (None when before is 0)."""
    return round(100.0 * (after - before) / before, 1) if before else None


@dataclass
class Row:
    """One host (or `fleet`) and target, before and after: the medians, their change, the noise bands, the
    verdict and why."""
    host: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    verdict: str = "within noise"
    rps_change: float | None = None
    p90_change: float | None = None
    rps_band: float | None = None
    p90_band: float | None = None
    reasons: list[str] = field(default_factory=list)
    rounds_before: list[dict[str, Any]] = field(default_factory=list)
    rounds_after: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.host} {self.target}"

    def cells(self) -> dict[str, Any]:
        def pct(value: float | None, sign: str = "+") -> str | None:
            return None if value is None else f"{value:{sign}g}%"

        before, after = self.before or {}, self.after or {}
        return {"rps before": before.get("rps"), "rps after": after.get("rps"), "rps change": pct(self.rps_change),
                "p90 before": before.get("p90_ms"), "p90 after": after.get("p90_ms"),
                "p90 change": pct(self.p90_change), "rps band": pct(self.rps_band, ""),
                "p90 band": pct(self.p90_band, ""), "verdict": self.verdict}


def judge(host: str, target: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> Row:
    """The verdict of one host (or the fleet) and target, from its two summaries (bench.summarize or
    bench.fleet_summary): `regression` when req/s fell or p90 rose by more than its noise band (and p90 by more than
    P90_FLOOR_MS), or requests failed
    that did not in the baseline; else `faster` when req/s rose or p90 fell by more than its band; else `within
    noise`. A host on one side only is `new` or `gone`: not judged."""
    row = Row(host, target, before, after)
    if before is None or after is None:
        row.verdict = "new" if before is None else "gone"
        return row
    row.rps_band = noise_band(before.get("rps_spread"), after.get("rps_spread"))
    row.p90_band = noise_band(before.get("p90_spread"), after.get("p90_spread"))
    row.rps_change = change(before["rps"], after["rps"])
    row.p90_change = change(before["p90_ms"], after["p90_ms"])
    rps, p90 = row.rps_change, row.p90_change
    # a few ms of p90 are this machine's noise at any percentage (bench.P90_FLOOR_MS, as the canary's gate)
    moved = p90 is not None and abs(after["p90_ms"] - before["p90_ms"]) > P90_FLOOR_MS
    if rps is not None and rps < -row.rps_band:
        row.reasons.append(f"req/s {rps:+g}%, beyond the band of {row.rps_band:g}%")
    if p90 is not None and moved and p90 > row.p90_band:
        row.reasons.append(f"p90 {p90:+g}%, beyond the band of {row.p90_band:g}%")
    if after.get("failed") and not before.get("failed"):
        row.reasons.append(f"{after['failed']} failed requests, none in the baseline")
    if row.reasons:
        row.verdict = "regression"
        return row
    if rps is not None and rps > row.rps_band:
        row.reasons.append(f"req/s {rps:+g}%, beyond the band of {row.rps_band:g}%")
    if p90 is not None and moved and p90 < -row.p90_band:
        row.reasons.append(f"p90 {p90:+g}%, beyond the band of {row.p90_band:g}%")
    row.verdict = "faster" if row.reasons else "within noise"
    return row


@dataclass
class Comparison:
    baseline: str
    baseline_at: str
    load: dict[str, Any]
    direct: bool
    rows: list[Row]
    runs: dict[str, dict[str, Any]]  # {host: {"before": ..., "after": ...}}: what each host ran
    repeats: tuple[int, int]  # rounds: the baseline's, now
    at: str = field(default_factory=now)

    @property
    def regressed(self) -> list[Row]:
        return [row for row in self.rows if row.verdict == "regression"]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [{**asdict(row), "label": row.label} for row in self.rows],
                "repeats": {"baseline": self.repeats[0], "now": self.repeats[1]}, "spread": SPREAD,
                "noise_floor": NOISE_FLOOR, "regressed": [row.label for row in self.regressed]}


def target_rounds(rounds: Rounds, target: str) -> list[dict[str, dict[str, Any]]]:
    return [{host: targets[target] for host, targets in measured.items() if target in targets} for measured in rounds]


def compare(baseline: Baseline, rounds: Rounds, serving: dict[str, dict[str, Any]]) -> Comparison:
    """The new `rounds` against the baseline's: a row per host and target (hosts on either side), then the fleet's
    per target (bench.fleet_summary: the sum of the hosts' medians, the worst host's p90, the spreads of each
    round's totals)."""
    old = baseline.rounds()
    found = {target for measured in old + rounds for targets in measured.values() for target in targets}
    rows = []
    for target in sorted(found, key=lambda name: (name != "nginx", name)):
        before, after = target_rounds(old, target), target_rounds(rounds, target)
        for host in sorted({host for measured in before + after for host in measured}):
            mine = [measured[host] for measured in before if host in measured]
            theirs = [measured[host] for measured in after if host in measured]
            row = judge(host, target, summarize(mine) if mine else None, summarize(theirs) if theirs else None)
            row.rounds_before, row.rounds_after = mine, theirs
            rows.append(row)
        row = judge("fleet", target, fleet_summary(before), fleet_summary(after))
        row.rounds_before = [fleet_totals(measured) for measured in before if measured]
        row.rounds_after = [fleet_totals(measured) for measured in after if measured]
        rows.append(row)
    now = {host for measured in rounds for host in measured}
    runs = {host: {"before": (baseline.hosts.get(host) or {}).get("runs"),
                   "after": serving.get(host) if host in now else None} for host in sorted(set(baseline.hosts) | now)}
    return Comparison(baseline.name, baseline.at, vars(baseline.bench_load()).copy(), baseline.direct, rows, runs,
                      (baseline.repeats, len(rounds)))


def ran(runs: dict[str, Any] | None) -> str:
    if not runs:
        return "unknown"
    return f"{runs.get('release', '?')} ({runs.get('variant', '?')})"


def comparison_lines(comparison: Comparison) -> list[str]:
    """What was compared, what each host ran before and now (by the audit log: unknown when no deploy from this
    controller reached it), the table, and what spread and band mean."""
    before, after = comparison.repeats
    lines = [f"compared with baseline {comparison.baseline} ({comparison.baseline_at}, {before} rounds) in "
             f"{after} rounds now: {BenchLoad(**comparison.load).label()}"]
    for host, runs in comparison.runs.items():
        mine = [row for row in comparison.rows if row.host == host]
        if not any(row.before for row in mine):
            lines.append(f"  {host}: now {ran(runs['after'])}; new: not in the baseline")
        elif not any(row.after for row in mine):
            lines.append(f"  {host}: {ran(runs['before'])}; gone: in the baseline, not measured now")
        elif runs["before"] or runs["after"]:
            lines.append(f"  {host}: {ran(runs['before'])} -> {ran(runs['after'])}")
    lines += format_table([(row.label, row.cells()) for row in comparison.rows], first="host target",
                          columns=COMPARE_COLUMNS)
    lines.append(f"median of the rounds; spread: {SPREAD}; band: the larger spread of the two sides, at least "
                 f"{NOISE_FLOOR:g}%")
    return lines


def regression_error(comparison: Comparison, path: Path) -> BenchRegressed:
    found = "; ".join(f"{row.label}: {', '.join(row.reasons)}" for row in comparison.regressed)
    return BenchRegressed(f"regression against baseline {comparison.baseline}: {found}",
                          hint=f"the comparison: {path} (and {path.with_suffix('.png').name}); more --repeats "
                               "measure the noise band more surely")


def bench_compare(project: Project, inventory: Path, name: str, given: dict[str, Any], repeats: int,
                  emit: ProgressCallback, limit: str | None = None, app_dir: str | None = None) -> BenchResult:
    """`deploy bench --compare NAME`: the baseline, its load (`given`: the load options given, which must be the
    baseline's) and the app (`app_dir`, as bench.BenchRequest's) checked before any host is asked; the fleet
    measured `repeats` times under that load, the comparison kept (BaselineStore.save_comparison)."""
    store = BaselineStore(project, inventory)
    baseline = store.load(name)
    load, direct = baseline.load_for(given)
    load.validate()
    spec = load_optional(app_dir)
    app = spec.name if spec else None
    baseline.check_app(app)
    emit(f"benchmark of every host against baseline {baseline.name} ({load.label()}, {repeats} rounds)")
    rounds = measure_rounds(project, inventory, load, repeats, limit, direct=direct, emit=emit, spec=spec)
    comparison = compare(baseline, rounds, host_releases(project, inventory, app))
    return comparison_result(comparison, store.save_comparison(comparison))


def comparison_result(comparison: Comparison, path: Path) -> BenchResult:
    """The comparison kept at `path` as `deploy bench --compare` prints it; a regression stops it (exit 3)."""
    plot = path.with_suffix(".png")
    return BenchResult({**comparison.as_dict(), "path": str(path), "plot": str(plot)},
                       [*comparison_lines(comparison), f"comparison: {path}; plot: {plot}"],
                       regression_error(comparison, path) if comparison.regressed else None)


def plot_comparison(comparison: Comparison, path: Path) -> None:
    """Before and after, per host and target (left) and for the fleet (right, its own scale): req/s above, p90
    below; bars at the medians, a dot for each round."""
    plt = pyplot()
    hosts = [row for row in comparison.rows if row.host != "fleet"]
    fleet = [row for row in comparison.rows if row.host == "fleet"]
    figure, axes = plt.subplots(2, 2, figsize=(12, 7), dpi=100, squeeze=False,
                                gridspec_kw={"width_ratios": [max(1, len(hosts)), max(1, len(fleet))]})
    width = 0.4
    for column, rows in enumerate((hosts, fleet)):
        for line, (figure_name, ylabel) in enumerate((("rps", "req/s"), ("p90_ms", "p90 (ms)"))):
            axis = axes[line][column]
            for offset, side, color in ((-width / 2, "before", "#9e9e9e"), (width / 2, "after", "#4c8bbf")):
                shown = [(x, row) for x, row in enumerate(rows) if getattr(row, side)]
                bars_with_rounds(axis, [x + offset for x, _ in shown],
                                 [getattr(row, side)[figure_name] for _, row in shown],
                                 [[r[figure_name] for r in getattr(row, f"rounds_{side}")] for _, row in shown],
                                 width, color, side)
            for x, row in enumerate(rows):
                if row.verdict == "regression":
                    axis.annotate("regression", (x, 0), ha="center", va="bottom", color="#d62728", fontsize="small")
            axis.set_xticks(range(len(rows)), [row.label + (f" ({row.verdict})" if row.verdict in ("new", "gone")
                                                            else "") for row in rows], rotation=30, ha="right")
            axis.set_ylabel(("fleet " if column else "") + ylabel)
            axis.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    before, after = comparison.repeats
    figure.suptitle(f"deploy bench --compare {comparison.baseline}: baseline ({before} rounds, "
                    f"{comparison.baseline_at}) and now ({after} rounds); {BenchLoad(**comparison.load).label()}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
