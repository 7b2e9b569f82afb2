"""Benchmarks on the fleet: the smoke benchmark after each deploy, its performance gate, and `deploy bench`
(run_bench: the fleet as deployed, a baseline and a comparison with it in benchcompare.py, the matrix in matrix.py).

Each host benchmarks itself (playbooks/bench.yml, library/deploykit_bench.py), all hosts at once. Results are
kept per inventory and release under .deploykit/bench/, so the next release on a host is compared with the one
before it on the same host, with the same variant, app and load.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploy_tool.appspec import URL_PATH, AppSpec, load_optional
from deploy_tool.cpus import cpu_set, cpu_text
from deploy_tool.errors import DeployError, GateStopped
from deploy_tool.inventory import inventory_slug, web_addresses
from deploy_tool.journal import host_releases, json_lines
from deploy_tool.playbook import PlaybookRun, ProgressCallback, RunOutcome
from deploy_tool.project import Project

ENGINES = ("wrk", "rate", "locust")
CLIENTS = ("host", "controller")  # where wrk and rate run (locust always runs on the controller)
P90_FLOOR_MS = 25  # a canary's p90 above its control hosts' by less than this is not judged
COLUMNS = ("rps", "failed", "p50_ms", "p90_ms", "p99_ms", "max_ms")
Rounds = list[dict[str, dict[str, dict[str, Any]]]]  # each round: {host: {target: result}}


def pick_engine(engine: str, rate: int) -> str:
    """A rate given with the default engine (wrk, which has no fixed rate) asks for the open-loop engine."""
    return "rate" if rate and engine == "wrk" else engine


@dataclass(frozen=True)
class BenchLoad:
    """The same load on every host: what makes two results comparable."""
    engine: str = "wrk"
    duration: int = 5
    connections: int = 16
    rate: int = 100
    path: str = "/"
    workers: int = 0  # locust: worker processes per host's master (distributed mode); 0: one process
    client: str = "host"  # wrk and rate: on each host, or on the controller against each host's address
    client_cpus: str = ""  # the controller's CPUs the client is kept on (taskset's list); empty: anywhere

    @classmethod
    def from_options(cls, given: dict[str, Any]) -> BenchLoad:
        """`deploy bench`'s load from the options given (by BenchLoad's field names), the others at their defaults:
        a rate with the default engine asks for the open loop; locust's rate is 20 req/s per user unless given."""
        engine = pick_engine(given.get("engine", cls.engine), given.get("rate") or 0)
        connections = given.get("connections", cls.connections)
        rate = given.get("rate") or (20 * connections if engine == "locust" else cls.rate)
        return cls(engine=engine, duration=given.get("duration", cls.duration), connections=connections, rate=rate,
                   path=given.get("path", cls.path), workers=given.get("workers", cls.workers),
                   client=given.get("client", cls.client), client_cpus=given.get("client_cpus", cls.client_cpus))

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise DeployError(f"unknown benchmark engine {self.engine!r}", hint=f"choose one of: {', '.join(ENGINES)}")
        for name, value, low, high, unit in (("duration", self.duration, 1, 600, " s"),
                                             ("connections", self.connections, 1, 4096, ""),
                                             ("rate", self.rate, 1, 100000, " req/s")):
            if not low <= value <= high:
                raise DeployError(f"benchmark {name} must be {low}-{high}{unit}, not {value}",
                                  hint="--smoke-duration/--duration, --smoke-connections/--connections, "
                                       "--smoke-rate/--rate")
        if not URL_PATH.fullmatch(self.path):
            raise DeployError(f"benchmark path {self.path!r} must be a URL path: / then letters, digits and URL "
                              "punctuation, no spaces or braces", hint="e.g. /, /health or /search?q=x")
        if not 0 <= self.workers <= 16 or (self.workers and self.engine != "locust"):
            raise DeployError("locust workers must be 0-16, and only with the locust engine")
        if self.client not in CLIENTS:
            raise DeployError(f"unknown benchmark client {self.client!r}", hint=f"choose one of: {', '.join(CLIENTS)}")
        if self.client_cpus:
            self.check_client_cpus()

    def check_client_cpus(self) -> None:
        """--client-cpus: the controller's CPUs, so only with --client controller (wrk or rate), and ones it has."""
        if self.client != "controller" or self.engine == "locust":
            raise DeployError("--client-cpus keeps the load client on some of the controller's CPUs: it takes "
                              "--client controller, with wrk or rate", hint="deploy bench --client controller "
                                                                            "--client-cpus 0")
        usable = os.sched_getaffinity(0)
        try:
            named = cpu_set(self.client_cpus)
        except ValueError as exc:
            raise DeployError(f"--client-cpus {self.client_cpus!r}: {exc}",
                              hint=f"a CPU list as taskset takes it: 0, 0-1 or 0,2-3 (this machine: "
                                   f"{cpu_text(usable)})") from exc
        if not named <= usable:
            raise DeployError(f"--client-cpus {self.client_cpus}: this machine offers the client CPUs "
                              f"{cpu_text(usable)}", hint="name some of those")

    def extravars(self, direct: bool = False) -> dict[str, Any]:
        return {"bench_engine": self.engine, "bench_duration": self.duration, "bench_connections": self.connections,
                "bench_threads": min(2, self.connections), "bench_rate": self.rate,
                "deploykit_bench_path": self.path, "deploykit_bench_direct": direct, "bench_client": self.client,
                "bench_client_cpus": self.client_cpus}

    @property
    def from_host(self) -> bool:
        """Whether the client runs on each host (and can load the app server's loopback port directly)."""
        return self.client == "host" and self.engine != "locust"

    def label(self) -> str:
        if self.engine == "locust":
            workers = f", {self.workers} workers per host" if self.workers else ""
            return (f"locust browse-form-POST, {self.connections} users at {self.rate} req/s per host, "
                    f"{self.duration} s{workers}")
        where = ""
        if self.client == "controller":
            where = ", from the controller" + (f" on CPUs {self.client_cpus}" if self.client_cpus else "")
        if self.engine == "rate":
            return f"open loop at {self.rate} req/s, {self.duration} s, {self.path}{where}"
        return f"wrk, {self.connections} connections, {self.duration} s, {self.path}{where}"


def load_of(recorded: dict[str, Any]) -> BenchLoad:
    """The BenchLoad a record kept (its fields by name; one it predates at its default, one it no longer has
    dropped)."""
    known = {f.name for f in fields(BenchLoad)}
    return BenchLoad(**{k: v for k, v in recorded.items() if k in known})


def check_client(load: BenchLoad, spec: AppSpec | None, direct: bool) -> None:
    """What a load from the controller cannot measure, refused before any host is asked: the app server's own port
    (it listens on each host's loopback), and an app's HTTPS with wrk (wrk sends the address it is given as the
    TLS name; nginx refuses a handshake for a name of no app, except on a host's loopback)."""
    if direct and load.client == "controller":
        raise DeployError("--direct loads the app server's own port, which listens on each host's loopback only: "
                          "it takes the client on the host",
                          hint="leave out --direct, or --client host (the default)")
    if load.client == "controller" and load.engine == "wrk" and spec is not None and spec["tls.source"] != "none":
        raise DeployError(f"{spec.name} has HTTPS: wrk from the controller would send the host's address as the TLS "
                          "name, which nginx refuses", hint="--engine rate sends the app's name (its Host header)")


@dataclass(frozen=True)
class Gate:
    """A release fails its smoke benchmark on a host when a request failed there, or when the host answered no
    request at all in it (a stalled host: wrk counts no error for a request still unanswered at its end), or
    when, against the previous release on that host (same variant, app and load), req/s fell or p90 rose by more
    than `threshold` percent (not judged with `failures_only`: the comparison is then only shown)."""
    threshold: float = 50.0
    rollback: bool = True
    failures_only: bool = False

    def validate(self) -> None:
        if not 0 < self.threshold <= 1000:
            raise DeployError(f"--gate-threshold {self.threshold} must be a percentage above 0 and at most 1000")

    def findings(self, current: dict[str, dict[str, Any]],
                 baseline: dict[str, dict[str, Any]] | None) -> list[str]:
        found = []
        for host, result in sorted(current.items()):
            if result.get("failed", 0):
                found.append(f"{host}: {result['failed']} failed requests ({result.get('errors')})")
            elif result.get("requests") == 0:
                found.append(f"{host}: answered no request in its smoke benchmark, and none failed: every request "
                             "was still unanswered at its end")
            before = (baseline or {}).get(host)
            if self.failures_only or not before or not before.get("rps"):
                continue
            drop = 100.0 * (before["rps"] - result["rps"]) / before["rps"]
            if drop > self.threshold:
                found.append(f"{host}: {result['rps']} req/s, {drop:.0f}% below {before['rps']} of the previous "
                             "release")
            if before.get("p90_ms") and result["p90_ms"] > before["p90_ms"] * (1 + self.threshold / 100):
                found.append(f"{host}: p90 {result['p90_ms']} ms, above {before['p90_ms']} ms of the previous release "
                             f"by more than {self.threshold:g}%")
        return found

    def against_control(self, current: dict[str, dict[str, Any]], control: dict[str, dict[str, Any]],
                        release: str, baseline: dict[str, dict[str, Any]] | None = None) -> list[str]:
        """A canary batch's judgement against its control hosts (on `release`), measured in the same run and
        moment, so that both sides share the moment's noise: a host fails when its req/s is below, or its p90
        above, the control hosts' median by more than `threshold` percent (the p90 also by more than
        P90_FLOOR_MS: a few ms are the noise of a shared machine); and, against the previous release on the same
        host (`baseline`), when its req/s changed since then by more than `threshold` percent below what the
        control hosts' did (their own change is the moment's noise, and the hosts' differences cancel out).
        Not judged with `failures_only`."""
        rates = [r["rps"] for r in control.values() if r.get("rps")]
        if self.failures_only or not rates:
            return []
        rps, p90 = statistics.median(rates), statistics.median(r.get("p90_ms") or 0 for r in control.values())
        names = f"the hosts on {release} ({', '.join(sorted(control))})"
        moved = [result["rps"] / (baseline or {})[host]["rps"] for host, result in control.items()
                 if result.get("rps") and ((baseline or {}).get(host) or {}).get("rps")]
        factor = statistics.median(moved) if moved else None
        found = []
        for host, result in sorted(current.items()):
            drop = 100.0 * (rps - result["rps"]) / rps
            if drop > self.threshold:
                found.append(f"{host}: {result['rps']} req/s, {drop:.0f}% below {rps:g} of {names}, measured at the "
                             "same time")
            if p90 and result["p90_ms"] > max(p90 * (1 + self.threshold / 100), p90 + P90_FLOOR_MS):
                found.append(f"{host}: p90 {result['p90_ms']} ms, above {p90:g} ms of {names} by more than "
                             f"{self.threshold:g}%, measured at the same time")
            before = ((baseline or {}).get(host) or {}).get("rps")
            if factor and before:
                ratio = result["rps"] / before
                change = 100.0 * (1 - ratio / factor)
                if change > self.threshold:
                    found.append(f"{host}: {result['rps']} req/s, {100 * ratio:.0f}% of the previous release's "
                                 f"{before} there, while {names} went to {100 * factor:.0f}% of theirs: "
                                 f"{change:.0f}% below")
        return found


@dataclass
class SmokeRecord:
    release: str
    variant: str
    app: str
    load: dict[str, Any]
    hosts: dict[str, dict[str, Any]]
    at: float = field(default_factory=time.time)
    verdict: str = "passed"
    baseline_release: str | None = None
    findings: list[str] = field(default_factory=list)

    def comparable(self, other: SmokeRecord) -> bool:
        """The same variant, app and load (a load recorded before a field of BenchLoad existed has its default)."""
        return ((self.variant, self.app, load_of(self.load))
                == (other.variant, other.app, load_of(other.load)))


class SmokeStore:
    """.deploykit/bench/<inventory>/smoke/<app>-<release>.json (the latest smoke of each app's release: several apps
    may share the hosts), and history.jsonl."""

    def __init__(self, project: Project, inventory: Path) -> None:
        self.folder = project.state_dir / "bench" / inventory_slug(inventory) / "smoke"

    def path(self, app: str, release: str) -> Path:
        return self.folder / f"{app}-{release.replace('/', '_')}.json"

    def save(self, record: SmokeRecord) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(record.app, record.release)
        path.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
        with (self.folder / "history.jsonl").open("a", encoding="utf-8") as history:
            history.write(json.dumps(asdict(record)) + "\n")
        return path

    def history(self) -> list[SmokeRecord]:
        known = {f.name for f in fields(SmokeRecord)}
        return [SmokeRecord(**entry) for entry in json_lines(self.folder / "history.jsonl")
                if known.issuperset(entry) and {"release", "variant", "app", "load", "hosts"} <= set(entry)]

    def baseline(self, record: SmokeRecord) -> SmokeRecord | None:
        """The last passed smoke of another release, with the same variant, app and load."""
        for earlier in reversed(self.history()):
            if (earlier.release != record.release and earlier.verdict == "passed" and earlier.hosts
                    and earlier.comparable(record)):
                return earlier
        return None


def bench_run(inventory: Path, load: BenchLoad, limit: str | None = None, direct: bool = False,
              spec: AppSpec | None = None) -> PlaybookRun:
    """`spec`: the app benchmarked (its deploykit.yml): its first name sent as Host, over HTTPS when it has tls, its
    own port for `direct`; none: the inventory's names."""
    extravars = {**load.extravars(direct), **({
        "app_server_names": spec.server_names, "deploykit_bench_tls": spec["tls.source"] != "none",
        **({"app_port": spec["server.port"]} if spec["server.port"] else {})} if spec else {})}
    return PlaybookRun("bench.yml", inventory, extravars=extravars, limit=limit)


def measure(project: Project, inventory: Path, load: BenchLoad, limit: str | None = None, direct: bool = False,
            emit: Any = None, spec: AppSpec | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """{host: {target: summary}}: wrk and rate run on every host, or with `client` controller on the controller
    against each host (playbooks/bench.yml); locust runs from the controller against each host's nginx (the app's
    own port listens on the host's loopback only)."""
    if load.engine == "locust":
        from deploy_tool.locust import run_locust

        return {host: {"nginx": summary} for host, summary in run_locust(web_addresses(inventory, limit), load).items()}
    from deploy_tool.playbook import run_playbook

    outcome = run_playbook(bench_run(inventory, load, limit, direct, spec), project, emit or (lambda _: None))
    return results_by_host(outcome)


def results_by_host(outcome: RunOutcome) -> dict[str, dict[str, dict[str, Any]]]:
    """{host: {target name (nginx, direct): summary}} from the captured deploykit_bench loop results."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for host, captured in outcome.results.items():
        for item in captured.get("results", []):
            name = (item.get("item") or {}).get("name", "?")
            summary = {k: item.get(k) for k in ("requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms",
                                                "max_ms", "engine", "cpus")}  # cpus: the ones the client ran on
            # the module says `failures` (a `failed` key would fail the Ansible task)
            table.setdefault(host, {})[name] = {**summary, "failed": item.get("failures", 0)}
    return table


# -- repeated measurements: the median of the rounds, and their spread ----------------------------------------
# Rounds of one host and target (or of the fleet) are summed up by their median; their spread is
# (max - min) / median, in percent: the width of what the same setup measured from round to round. A change is
# told from noise when it is larger than the noise band: the larger spread of the two sides, at least NOISE_FLOOR.
SPREAD = "(max - min) / median of the rounds, in percent"
NOISE_FLOOR = 5.0  # percent: no band is narrower (two or three rounds can agree by chance)
MAX_REPEATS = 20
LATENCIES = ("p50_ms", "p90_ms", "p99_ms", "max_ms")


def check_repeats(repeats: int) -> None:
    if not 1 <= repeats <= MAX_REPEATS:
        raise DeployError(f"--repeats must be 1-{MAX_REPEATS}, not {repeats}",
                          hint="3 rounds give a median and a spread; more rounds, a steadier median")


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / median in percent, rounded to 0.1; None for fewer than two values (no spread measured), 0
    when the median is 0."""
    if len(values) < 2:
        return None
    middle = statistics.median(values)
    return round(100.0 * (max(values) - min(values)) / middle, 1) if middle else 0.0


def noise_band(*spreads: float | None) -> float:
    """The larger of the spreads measured, never below NOISE_FLOOR."""
    return max([NOISE_FLOOR] + [s for s in spreads if s is not None])


def summarize(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One host's (and target's) rounds as one result: the median of each figure, the failed requests summed (a
    failure in any round counts), the spreads of req/s and p90, and how many rounds."""
    errors: dict[str, int] = {}
    for result in rounds:
        for kind, count in (result.get("errors") or {}).items():
            errors[kind] = errors.get(kind, 0) + count
    rps = [float(r.get("rps") or 0) for r in rounds]
    p90 = [float(r.get("p90_ms") or 0) for r in rounds]
    return {"rounds": len(rounds), "rps": round(statistics.median(rps), 1),
            "failed": sum(r.get("failed") or 0 for r in rounds), "errors": errors,
            **{k: round(statistics.median(float(r.get(k) or 0) for r in rounds), 2) for k in LATENCIES},
            "rps_spread": spread(rps), "p90_spread": spread(p90)}


def fleet_totals(per_host: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The fleet as one: requests per second summed, failures summed, the worst host's latencies."""
    if not per_host:
        return {}
    results = list(per_host.values())
    return {"hosts": len(results), "rps": round(sum(r["rps"] for r in results), 1),
            "failed": sum(r["failed"] for r in results),
            **{k: max(r[k] for r in results) for k in LATENCIES}}


def by_host(rounds: Sequence[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Rounds of {host: {target: result}} as {host: {target: [its result in each round it answered]}}."""
    table: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for measured in rounds:
        for host, targets in measured.items():
            for target, result in targets.items():
                table.setdefault(host, {}).setdefault(target, []).append(result)
    return table


def fleet_summary(rounds: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any] | None:
    """Rounds of {host: result} (one target) as the fleet's figures: the fleet_totals of the hosts' medians (req/s:
    the sum of the hosts' medians; latencies: the worst host's median), and the spreads of the fleet_totals of
    each round. None when no host answered."""
    hosts: dict[str, list[dict[str, Any]]] = {}
    for measured in rounds:
        for host, result in measured.items():
            hosts.setdefault(host, []).append(result)
    if not hosts:
        return None
    each = [fleet_totals(measured) for measured in rounds if measured]
    return {**fleet_totals({host: summarize(results) for host, results in hosts.items()}), "rounds": len(each),
            "rps_spread": spread([t["rps"] for t in each]), "p90_spread": spread([t["p90_ms"] for t in each])}


def summary_table(rounds: Sequence[dict[str, dict[str, dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{host: {target: summarize(its rounds)}}."""
    return {host: {target: summarize(results) for target, results in targets.items()}
            for host, targets in sorted(by_host(rounds).items())}


def measure_rounds(project: Project, inventory: Path, load: BenchLoad, repeats: int, limit: str | None = None,
                   direct: bool = False, emit: Any = None, spec: AppSpec | None = None) -> Rounds:
    """`measure` `repeats` times, one round after the other, each round every host at once."""
    say = emit or (lambda _: None)
    rounds = []
    for number in range(1, repeats + 1):
        if repeats > 1:
            say(f"round {number}/{repeats}")
        rounds.append(measure(project, inventory, load, limit, direct=direct, emit=say, spec=spec))
    return rounds


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars_with_rounds(axis: Any, positions: Sequence[float], medians: Sequence[float],
                     rounds: Sequence[Sequence[float]], width: float, color: str, label: str) -> None:
    """Bars at the medians, each round's figure as a dot on its bar: the spread as measured."""
    axis.bar(positions, medians, width, color=color, label=label)
    xs = [x for x, values in zip(positions, rounds, strict=True) for _ in values]
    ys = [value for values in rounds for value in values]
    if any(len(values) > 1 for values in rounds):
        axis.scatter(xs, ys, s=12, color="black", zorder=3, label=f"{label}: each round")


HEADERS = {"rps_spread": "rps spread", "p90_spread": "p90 spread"}  # the other columns: their name, `_ms` as ` ms`


def cell(column: str, value: Any) -> str:
    """A table's cell: a spread as a percentage, nothing measured as -, any other value as it is."""
    if value is None:
        return "-"
    if column.endswith("_spread") and isinstance(value, (int, float)):
        return f"{value:g}%"
    return str(value)


def format_table(rows: Sequence[tuple[str, dict[str, Any] | None]], first: str = "host",
                 columns: Sequence[str] = COLUMNS) -> list[str]:
    """Lines of a fixed-width table: one row per label, the `columns` of its result (or n/a); a column is 11
    characters wide, or its header's or longest cell's width and two."""
    width = max([len(first)] + [len(label) for label, _ in rows]) + 2
    headers = [HEADERS.get(c, c.replace("_ms", " ms")) for c in columns]
    cells = [[cell(c, result.get(c, 0)) for c in columns] if result is not None else ["n/a"] * len(columns)
             for _, result in rows]
    widths = [max([11, len(header) + 2] + [len(line[i]) + 2 for line in cells]) for i, header in enumerate(headers)]
    lines = [f"{first:<{width}}" + "".join(f"{h:>{w}}" for h, w in zip(headers, widths, strict=True))]
    for (label, _), line in zip(rows, cells, strict=True):
        lines.append(f"{label:<{width}}" + "".join(f"{v:>{w}}" for v, w in zip(line, widths, strict=True)))
    return lines


# -- `deploy bench`: what runs, and what it prints ------------------------------------------------------------
@dataclass(frozen=True)
class BenchRequest:
    """`deploy bench` as asked: the fleet measured (and kept as baseline `baseline`), compared with baseline
    `compare`, or every server setup measured in turn (`matrix`). `given`: the load options given, by BenchLoad's
    field names (and `direct`), the others at their defaults (a comparison: the baseline's). `app_dir`: the app's
    directory (--project; None: this directory's deploykit.yml, when it has one), whose host name is sent."""
    inventory: Path
    given: dict[str, Any] = field(default_factory=dict)
    limit: str | None = None
    repeats: int | None = None  # None: 1, or 3 for a baseline or a comparison
    baseline: str | None = None
    compare: str | None = None
    matrix: bool = False
    variants: str | None = None  # the matrix's entries (None: every variant, and uWSGI 3x3)
    version: str | None = None  # the matrix's release (None: the one deployed)
    app_dir: str | None = None
    vault_password_file: str | None = None  # the matrix's deploys of an app with secrets

    def rounds(self) -> int:
        """The rounds to measure, checked with the modes asked (before any host is asked)."""
        if self.matrix and (self.baseline or self.compare):
            raise DeployError("--matrix measures setups: it takes no --baseline or --compare",
                              hint="deploy bench --baseline NAME (before the upgrade), --compare NAME (after it)")
        repeats = self.repeats if self.repeats is not None else 3 if self.baseline or self.compare else 1
        check_repeats(repeats)
        return repeats


@dataclass
class BenchResult:
    """What a `deploy bench` prints: `document` (--json) or `lines`; then `stopped`, when a gate judged the fleet
    slower (a regression against the baseline: exit 3)."""
    document: dict[str, Any]
    lines: list[str]
    stopped: GateStopped | None = None


def run_bench(request: BenchRequest, project: Project, emit: ProgressCallback,
              docker_client: Callable[[], Any]) -> BenchResult:
    """`deploy bench`: a comparison with a baseline (benchcompare.bench_compare), the matrix
    (matrix.run_bench_matrix), or the fleet as deployed (bench_fleet); each refuses what it would refuse before any
    host is asked. `emit`: the progress lines; `docker_client`: the matrix's deploys."""
    repeats = request.rounds()
    if request.compare:
        from deploy_tool.benchcompare import bench_compare  # it imports this module

        return bench_compare(project, request.inventory, request.compare, request.given, repeats, emit,
                             limit=request.limit, app_dir=request.app_dir)
    load = BenchLoad.from_options(request.given)
    load.validate()
    if request.matrix:
        from deploy_tool.matrix import run_bench_matrix  # it imports this module

        return run_bench_matrix(project, request.inventory, load, repeats, emit, docker_client,
                                version=request.version, variants=request.variants, limit=request.limit,
                                app_dir=request.app_dir, vault_password_file=request.vault_password_file)
    return bench_fleet(project, request.inventory, load, repeats, emit, limit=request.limit,
                       direct=bool(request.given.get("direct")), app_dir=request.app_dir, baseline=request.baseline)


def bench_fleet(project: Project, inventory: Path, load: BenchLoad, repeats: int, emit: ProgressCallback,
                limit: str | None = None, direct: bool = False, app_dir: str | None = None,
                baseline: str | None = None) -> BenchResult:
    """The fleet as deployed, measured `repeats` times; kept as baseline `baseline` when one is named (its name
    checked before any host is asked)."""
    from deploy_tool.benchcompare import Baseline, BaselineStore  # it imports this module

    if baseline:
        BaselineStore.check_name(baseline)
    spec = load_optional(app_dir)
    check_client(load, spec, direct)
    emit(f"benchmark of every host ({load.label()}" + (f", {repeats} rounds)" if repeats > 1 else ")"))
    rounds = measure_rounds(project, inventory, load, repeats, limit, direct=direct, emit=emit, spec=spec)
    if baseline:
        store, app = BaselineStore(project, inventory), spec.name if spec else None
        kept = Baseline.measured(baseline, inventory, app, load, direct, rounds, host_releases(project, inventory, app),
                                 limit)
        replaced = " (replaced)" if store.path(baseline).exists() else ""
        emit(f"baseline {baseline}{replaced}: {store.save(kept)}")
    return measured_result(load, rounds)


def measured_result(load: BenchLoad, rounds: Rounds) -> BenchResult:
    """The fleet's figures: with one round as measured; with more, each host's and target's median of the rounds
    and their spread (the JSON has every round too)."""
    repeats = len(rounds)
    results = rounds[0] if repeats == 1 else summary_table(rounds)
    columns = COLUMNS if repeats == 1 else (*COLUMNS, "rps_spread", "p90_spread")
    rows = [(f"{host} {target}", result) for host, targets in sorted(results.items())
            for target, result in targets.items()]
    lines = format_table(rows, columns=columns)
    if repeats > 1:
        lines.append(f"median of {repeats} rounds (failed: their sum); spread: {SPREAD}")
    return BenchResult({"load": vars(load), "results": results,
                        **({"repeats": repeats, "rounds": rounds} if repeats > 1 else {})}, lines)
