"""Benchmarks that tell a regression from noise, without a fleet: the statistics of repeated rounds (median,
spread, noise band), the verdict of a comparison with a baseline (hosts added and removed among them), the
baseline store and its refusals, the matrix's interleaved rounds and its stated result, `deploy bench` in the
core (bench.run_bench, each round's measurement given) and what it prints, and the `deploy bench` refusals that come
before any host is asked (the real CLI, in a subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import DJANGO_DIR, deploy
from deploy_tool import matrix as matrix_module
from deploy_tool.bench import (
    NOISE_FLOOR,
    BenchLoad,
    BenchRequest,
    check_repeats,
    fleet_summary,
    format_table,
    measured_result,
    noise_band,
    run_bench,
    spread,
    summarize,
    summary_table,
)
from deploy_tool.benchcompare import (
    Baseline,
    BaselineStore,
    BenchRegressed,
    compare,
    comparison_lines,
    comparison_result,
    judge,
)
from deploy_tool.errors import DeployError
from deploy_tool.journal import host_releases
from deploy_tool.matrix import MatrixEntry, interleaved, matrix_result, matrix_table, run_matrix, stated_result
from deploy_tool.project import Project


def result(rps: float, p90: float = 10.0, failed: int = 0) -> dict:
    return {"rps": rps, "failed": failed, "errors": {"status": failed} if failed else {}, "p50_ms": p90 / 2,
            "p90_ms": p90, "p99_ms": p90 * 2, "max_ms": p90 * 3}


def rounds_of(*per_round: dict[str, float], p90: float = 10.0) -> list[dict]:
    """Rounds of {host: {"nginx": result}} from {host: rps} per round."""
    return [{host: {"nginx": result(rps, p90)} for host, rps in measured.items()} for measured in per_round]


# -- statistics ------------------------------------------------------------------------------------------------
def test_spread_is_the_range_over_the_median_in_percent():
    assert spread([100, 104, 98]) == 6.0
    assert spread([200, 100, 150]) == pytest.approx(66.7)
    assert spread([5.0]) is None  # one round: no spread measured
    assert spread([0, 0]) == 0.0


def test_noise_band_is_the_larger_spread_never_below_the_floor():
    assert noise_band(None, None) == NOISE_FLOOR
    assert noise_band(1.0, 2.0) == NOISE_FLOOR
    assert noise_band(3.0, 8.5) == 8.5
    assert noise_band(None, 12.0) == 12.0


def test_summarize_takes_medians_sums_failures_and_measures_the_spread():
    summary = summarize([result(100, 10), result(90, 30, failed=2), result(120, 20)])
    assert (summary["rounds"], summary["rps"], summary["p90_ms"]) == (3, 100.0, 20.0)
    assert summary["failed"] == 2 and summary["errors"] == {"status": 2}
    assert summary["rps_spread"] == 30.0 and summary["p90_spread"] == 100.0
    assert summarize([result(100)])["rps_spread"] is None


def test_fleet_is_the_sum_of_the_hosts_medians_and_its_spread_that_of_each_rounds_total():
    rounds = [{"h1": result(100, 10), "h2": result(50, 40)}, {"h1": result(110, 12), "h2": result(40, 30)},
              {"h1": result(90, 11), "h2": result(60, 20)}]
    fleet = fleet_summary(rounds)
    assert fleet is not None
    assert (fleet["hosts"], fleet["rps"], fleet["rounds"]) == (2, 150.0, 3)  # 100 + 50
    assert fleet["p90_ms"] == 30.0  # the worst host's median p90
    assert fleet["rps_spread"] == 0.0  # each round's total is 150
    assert fleet_summary([{}, {}]) is None
    table = summary_table([{"h1": {"nginx": result(100)}}, {"h1": {"nginx": result(120), "direct": result(300)}}])
    assert table["h1"]["nginx"]["rps"] == 110.0 and table["h1"]["direct"]["rounds"] == 1


def test_repeats_out_of_range_are_refused():
    for bad in (0, -1, 21):
        with pytest.raises(DeployError, match="--repeats must be 1-20"):
            check_repeats(bad)
    check_repeats(3)


def test_a_table_with_spread_columns_shows_them_in_percent_and_none_measured_as_a_dash():
    lines = format_table([("h1 nginx", {**result(100), "rps_spread": 6.0, "p90_spread": None})],
                         columns=("rps", "rps_spread", "p90_spread"))
    assert lines[0].split() == ["host", "rps", "rps", "spread", "p90", "spread"]
    assert lines[1].split() == ["h1", "nginx", "100", "6%", "-"]


def test_load_from_options_keeps_the_defaults_of_a_plain_bench():
    assert BenchLoad.from_options({}) == BenchLoad()
    assert BenchLoad.from_options({"rate": 200}).engine == "rate"  # a rate asks for the open loop
    assert BenchLoad.from_options({"engine": "locust", "connections": 4}).rate == 80  # 20 req/s per user
    assert BenchLoad.from_options({"duration": 9, "path": "/health"}) == BenchLoad(duration=9, path="/health")


# -- the verdict -----------------------------------------------------------------------------------------------
def before_after(before_rps: list[float], after_rps: list[float], before_p90: float = 10.0,
                 after_p90: float = 10.0):
    return (summarize([result(r, before_p90) for r in before_rps]),
            summarize([result(r, after_p90) for r in after_rps]))


def test_a_drop_beyond_the_band_is_a_regression_within_it_is_not():
    row = judge("h1", "nginx", *before_after([100, 102, 98], [80, 81, 79]))  # -20%, band 5% (the floor)
    assert row.verdict == "regression" and row.rps_change == -20.0 and row.rps_band == NOISE_FLOOR
    assert row.reasons == ["req/s -20%, beyond the band of 5%"]
    row = judge("h1", "nginx", *before_after([100, 130, 90], [80, 85, 75]))  # -20%, but the rounds spread 40%
    assert (row.verdict, row.rps_band) == ("within noise", 40.0)
    assert judge("h1", "nginx", *before_after([100, 101, 99], [97, 98, 96])).verdict == "within noise"  # -3%


def test_faster_beyond_the_band_and_p90_or_failures_make_a_regression():
    assert judge("h1", "nginx", *before_after([100, 101, 99], [130, 131, 129])).verdict == "faster"
    row = judge("h1", "nginx", *before_after([100, 101, 99], [100, 101, 99], before_p90=40.0, after_p90=80.0))
    assert row.verdict == "regression" and row.p90_change == 100.0 and "p90 +100%" in row.reasons[0]
    assert judge("h1", "nginx", *before_after([100] * 3, [100] * 3, before_p90=60.0,
                                              after_p90=30.0)).verdict == "faster"
    # a few ms are noise at any percentage: 10 -> 30 ms is +200% but 20 ms (P90_FLOOR_MS: 25)
    row = judge("h1", "nginx", *before_after([100] * 3, [100] * 3, after_p90=30.0))
    assert (row.verdict, row.p90_change) == ("within noise", 200.0)
    before = summarize([result(100)] * 3)
    after = summarize([result(100), result(100, failed=1), result(100)])
    row = judge("h1", "nginx", before, after)
    assert row.verdict == "regression" and row.reasons == ["1 failed requests, none in the baseline"]


def baseline_of(rounds: list[dict], name: str = "before", serving: dict | None = None) -> Baseline:
    return Baseline.measured(name, Path("/inv"), None, BenchLoad(duration=3), False, rounds, serving or {})


def test_hosts_replaced_in_an_upgrade_are_new_and_gone_and_the_fleet_is_still_judged():
    baseline = baseline_of(rounds_of({"h1": 100, "h2": 50}, {"h1": 102, "h2": 51}, {"h1": 98, "h2": 49}),
                           serving={"h1": {"release": "1.0", "variant": "uwsgi"}})
    now = rounds_of({"h1": 101, "h3": 49}, {"h1": 100, "h3": 50}, {"h1": 99, "h3": 51})
    comparison = compare(baseline, now, {"h1": {"release": "1.1", "variant": "uwsgi"}})
    verdicts = {row.label: row.verdict for row in comparison.rows}
    assert verdicts == {"h1 nginx": "within noise", "h2 nginx": "gone", "h3 nginx": "new",
                        "fleet nginx": "within noise"}
    assert comparison.regressed == []
    fleet = comparison.rows[-1]
    assert (fleet.before["rps"], fleet.after["rps"]) == (150.0, 150.0)  # type: ignore[index]
    lines = comparison_lines(comparison)
    assert "  h1: 1.0 (uwsgi) -> 1.1 (uwsgi)" in lines
    assert "  h2: unknown; gone: in the baseline, not measured now" in lines
    assert "  h3: now unknown; new: not in the baseline" in lines
    assert comparison.runs["h2"] == {"before": None, "after": None}


def test_a_slower_host_makes_the_comparison_regressed_with_exit_code_3():
    baseline = baseline_of(rounds_of({"h1": 100, "h2": 100}, {"h1": 101, "h2": 99}, {"h1": 99, "h2": 100}))
    now = rounds_of({"h1": 70, "h2": 100}, {"h1": 71, "h2": 101}, {"h1": 69, "h2": 99})
    comparison = compare(baseline, now, {})
    assert [row.label for row in comparison.regressed] == ["h1 nginx", "fleet nginx"]  # fleet: 200 -> 170
    document = comparison.as_dict()
    assert document["regressed"] == ["h1 nginx", "fleet nginx"] and document["repeats"] == {"baseline": 3, "now": 3}
    assert len(document["rows"][0]["rounds_after"]) == 3
    table = [line for line in comparison_lines(comparison) if line.startswith("h1 nginx")]
    assert table[0].split()[-1] == "regression" and "-30%" in table[0]
    assert BenchRegressed("x").exit_code == 3


# -- the baseline store ----------------------------------------------------------------------------------------
def test_a_baseline_round_trips_with_its_rounds_and_what_each_host_ran(tmp_path):
    store = BaselineStore(Project(root=tmp_path), tmp_path / "inventory")
    rounds = rounds_of({"h1": 100, "h2": 50}, {"h1": 104}, {"h1": 98, "h2": 52})  # h2 missed the second round
    serving = {"h1": {"release": "1.0", "variant": "uwsgi", "app": "demo", "at": "t"}}
    path = store.save(baseline_of(rounds, serving=serving))
    assert path == tmp_path / ".deploykit" / "bench" / path.parent.parent.name / "baselines" / "before.json"
    assert path.parent.parent.name.startswith("inventory-")
    loaded = store.load("before")
    assert loaded.rounds() == rounds and loaded.repeats == 3
    assert loaded.hosts["h2"]["rounds"][1] is None and loaded.hosts["h1"]["runs"]["release"] == "1.0"
    assert loaded.load == vars(BenchLoad(duration=3)) and store.names() == ["before"]
    assert json.loads(path.read_text())["spread"].startswith("(max - min) / median")


def test_bad_names_missing_and_damaged_baselines_are_refused(tmp_path):
    store = BaselineStore(Project(root=tmp_path), tmp_path / "inventory")
    for bad in ("../x", "a/b", "", ".hidden", "a b", "x" * 65, "before\n"):
        with pytest.raises(DeployError) as caught:
            store.path(bad)
        assert caught.value.hint and "no path" in caught.value.hint
    with pytest.raises(DeployError) as caught:
        store.load("nope")
    assert "deploy bench --baseline NAME" in str(caught.value.hint)
    store.save(baseline_of(rounds_of({"h1": 100})))
    store.save(baseline_of(rounds_of({"h1": 100}), name="v1.4"))
    with pytest.raises(DeployError) as caught:
        store.load("nope")
    assert caught.value.hint == "baselines kept: before, v1.4"
    (store.folder / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(DeployError, match="is damaged"):
        store.load("broken")


def test_a_comparison_takes_the_baselines_load_and_refuses_another():
    baseline = baseline_of(rounds_of({"h1": 100}))
    assert baseline.load_for({}) == (BenchLoad(duration=3), False)
    assert baseline.load_for({"duration": 3, "connections": 16}) == (BenchLoad(duration=3), False)
    with pytest.raises(DeployError) as caught:
        baseline.load_for({"duration": 5, "direct": True})
    assert str(caught.value).startswith("baseline before was measured under another load: direct True (the "
                                        "baseline's: False), duration 5 (the baseline's: 3)")
    assert "wrk, 16 connections, 3 s, /" in str(caught.value.hint)
    baseline.check_app(None)
    with pytest.raises(DeployError, match="would load django-demo"):
        baseline.check_app("django-demo")


def test_what_each_host_runs_comes_from_the_audit_logs_last_deploy_that_reached_it(tmp_path):
    project = Project(root=tmp_path)
    inventory = tmp_path / "inventory"
    entries = [{"action": "deploy", "inventory": str(inventory), "version": "1.0", "variant": "uwsgi", "app": "demo",
                "result": "ok", "hosts": {"h1": {}, "h2": {}}},
               {"action": "deploy", "inventory": str(inventory), "version": "1.1", "variant": "uwsgi", "app": "demo",
                "result": "ok", "hosts": {"h1": {}}, "limit": "h1"},
               {"action": "deploy", "inventory": str(inventory), "version": "1.2", "variant": "uwsgi", "app": "demo",
                "result": "failed", "hosts": {"h2": {}}}]
    project.state_dir.mkdir()
    (project.state_dir / "audit.log").write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    serving = host_releases(project, inventory, "demo")
    assert {host: runs["release"] for host, runs in serving.items()} == {"h1": "1.1", "h2": "1.0"}
    assert host_releases(project, inventory, "other") == {}


# -- the matrix's rounds ---------------------------------------------------------------------------------------
def test_matrix_rounds_are_interleaved():
    entries = [MatrixEntry("uwsgi"), MatrixEntry("gunicorn-sync"), MatrixEntry("uwsgi", 3, 3)]
    assert interleaved(entries, 2) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert interleaved(entries, 1) == [(0, 0), (0, 1), (0, 2)]


def test_run_matrix_deploys_and_measures_a_b_a_b_and_keeps_every_round(monkeypatch, tmp_path):
    """run_matrix's loop with the deploy and the measurement recorded (their own work is the lab's)."""
    from deploy_tool.appspec import load
    from deploy_tool.deploy import DeployRequest

    done: list[str] = []
    figures = {"uwsgi": iter([100, 110, 90]), "gunicorn-sync": iter([50, 55, 45])}

    def measure(project, inventory, load, limit, direct=False, spec=None):
        done.append(f"measure {done[-1].split()[-1]} direct={direct}")
        return {"h1": {"nginx": result(next(figures[done[-2].split()[-1]]))}}

    monkeypatch.setattr(matrix_module, "measure", measure)
    base = DeployRequest(inventory=tmp_path, version="1.0", spec=load(DJANGO_DIR))
    entries = [MatrixEntry("uwsgi"), MatrixEntry("gunicorn-sync")]
    matrix = run_matrix(base, entries, BenchLoad(), Project.locate(), lambda _: None,
                        lambda request: done.append(f"deploy {request.variant}"), repeats=3)
    assert done == ["deploy uwsgi", "measure uwsgi direct=False", "deploy gunicorn-sync",
                    "measure gunicorn-sync direct=True"] * 3
    assert matrix["order"] == ["uwsgi", "gunicorn-sync"] * 3 and matrix["repeats"] == 3
    rows = {(row["setup"], row["target"]): row for row in matrix["rows"]}
    uwsgi = rows[("uwsgi", "nginx")]
    assert [r["fleet"]["rps"] for r in uwsgi["rounds"]] == [100, 110, 90]
    assert (uwsgi["fleet"]["rps"], uwsgi["fleet"]["rps_spread"]) == (100.0, 20.0)
    assert rows[("uwsgi", "direct")]["fleet"] is None  # nothing measured directly: no row figures
    assert matrix["result"] == "uwsgi serves 100% more than gunicorn-sync (spread 20% and 20%)"
    assert matrix_table(matrix)[0].split()[-2:] == ["rps", "spread"]
    assert matrix_table(matrix)[1].split()[-1] == "20%"


def matrix_of(*setups: tuple[str, list[float]]) -> dict:
    rows = []
    for setup, rps in setups:
        rounds = [{"h1": result(r)} for r in rps]
        rows.append({"setup": setup, "target": "nginx", "fleet": fleet_summary(rounds)})
        rows.append({"setup": setup, "target": "direct", "fleet": None})
    return {"rows": rows}


def test_the_stated_result_names_a_winner_only_beyond_the_spread():
    clear = matrix_of(("gunicorn-sync", [100, 104, 98]), ("uwsgi 3x3", [112, 115, 110]))
    assert stated_result(clear) == "uwsgi 3x3 serves 12% more than gunicorn-sync (spread 4.5% and 6%)"
    close = matrix_of(("gunicorn-sync", [100, 120, 90]), ("uwsgi 3x3", [112, 115, 110]))
    assert stated_result(close) == ("no clear winner: uwsgi 3x3 serves 12% more than gunicorn-sync (spread 4.5% and "
                                    "30%), within the noise")
    once = matrix_of(("gunicorn-sync", [100]), ("uwsgi 3x3", [103]))
    assert stated_result(once).startswith("no clear winner: uwsgi 3x3 serves 3% more than gunicorn-sync (spread not "
                                          "measured: one round each")
    assert stated_result(matrix_of(("uwsgi", [100]))) == "one setup measured: nothing to compare it with"


# -- `deploy bench` in the core: what runs, and what it prints ----------------------------------------------------
def test_the_request_takes_3_rounds_for_a_baseline_or_a_comparison_and_no_matrix_with_them():
    inventory = Path("/inv")
    assert BenchRequest(inventory).rounds() == 1 and BenchRequest(inventory, matrix=True).rounds() == 1
    assert BenchRequest(inventory, baseline="b").rounds() == BenchRequest(inventory, compare="b").rounds() == 3
    assert BenchRequest(inventory, compare="b", repeats=5).rounds() == 5
    with pytest.raises(DeployError, match="--repeats must be 1-20, not 21"):
        BenchRequest(inventory, repeats=21).rounds()
    for kept in ({"baseline": "b"}, {"compare": "b"}):
        with pytest.raises(DeployError, match="--matrix measures setups: it takes no --baseline or --compare"):
            BenchRequest(inventory, matrix=True, repeats=0, **kept).rounds()  # the modes, before the rounds


def test_one_round_is_shown_as_measured_more_as_each_hosts_median_and_spread():
    load = BenchLoad(duration=2)
    once = measured_result(load, rounds_of({"h2": 50, "h1": 100}))
    assert once.document == {"load": vars(load), "results": rounds_of({"h2": 50, "h1": 100})[0]}
    assert [line.split()[:3] for line in once.lines] == [["host", "rps", "failed"], ["h1", "nginx", "100"],
                                                         ["h2", "nginx", "50"]]
    assert once.stopped is None and "spread" not in once.lines[0]
    rounds = rounds_of({"h1": 100}, {"h1": 104}, {"h1": 98})
    thrice = measured_result(load, rounds)
    assert thrice.document["repeats"] == 3 and thrice.document["rounds"] == rounds
    assert thrice.document["results"]["h1"]["nginx"]["rps_spread"] == 6.0
    assert thrice.lines[0].endswith("rps spread  p90 spread") and thrice.lines[1].split()[-2:] == ["6%", "0%"]
    assert thrice.lines[-1].startswith("median of 3 rounds (failed: their sum); spread: (max - min) / median")


def test_a_comparisons_result_names_its_files_and_carries_the_regression_that_exits_3():
    baseline = baseline_of(rounds_of({"h1": 100}, {"h1": 101}, {"h1": 99}))
    path = Path("/state/compare/20240101-000000-v1.4.json")
    steady = comparison_result(compare(baseline, rounds_of({"h1": 100}, {"h1": 101}, {"h1": 99}), {}), path)
    assert steady.stopped is None and steady.document["regressed"] == []
    assert (steady.document["path"], steady.document["plot"]) == (str(path), "/state/compare/20240101-000000-v1.4.png")
    assert steady.lines[-1] == f"comparison: {path}; plot: /state/compare/20240101-000000-v1.4.png"
    slower = comparison_result(compare(baseline, rounds_of({"h1": 70}, {"h1": 71}, {"h1": 69}), {}), path)
    assert isinstance(slower.stopped, BenchRegressed) and slower.stopped.exit_code == 3
    assert slower.stopped.message.startswith("regression against baseline before: h1 nginx: req/s -30%")
    assert slower.lines[:-1] == comparison_lines(compare(baseline, rounds_of({"h1": 70}, {"h1": 71}, {"h1": 69}), {}))


def test_the_matrixs_result_is_its_table_its_stated_result_and_its_files():
    matrix = {**matrix_of(("gunicorn-sync", [100, 104, 98]), ("uwsgi 3x3", [112, 115, 110])), "seconds": 42.5}
    matrix["result"] = stated_result(matrix)
    shown = matrix_result(matrix, Path("/state/matrix-20240101-000000.json"))
    assert shown.document is matrix and shown.stopped is None
    assert shown.lines == [*matrix_table(matrix), "uwsgi 3x3 serves 12% more than gunicorn-sync (spread 4.5% and 6%)",
                           "matrix: /state/matrix-20240101-000000.json and /state/matrix-20240101-000000.png (42.5 s)"]


def test_run_bench_keeps_a_baseline_then_compares_with_it(tmp_path, monkeypatch):
    """The core's `deploy bench` without the CLI, each round's measurement given: a bad name is refused before
    any round, the baseline is kept, the comparison takes its load and rounds and carries its regression."""
    from deploy_tool import bench

    monkeypatch.chdir(tmp_path)  # no deploykit.yml here: the inventory's names
    figures = iter([100, 104, 98, 70, 71, 69])
    asked = []

    def measure(project, inventory, load, limit=None, direct=False, emit=None, spec=None):
        asked.append((load, limit, direct, spec))
        return {"h1": {"nginx": result(next(figures))}}

    def no_docker():
        raise AssertionError("only the matrix asks Docker")

    monkeypatch.setattr(bench, "measure", measure)
    project, inventory, said = Project(root=tmp_path), tmp_path / "inventory", []
    with pytest.raises(DeployError, match="bad baseline name"):
        run_bench(BenchRequest(inventory, baseline="../b"), project, said.append, no_docker)
    assert asked == [] and said == []
    kept = run_bench(BenchRequest(inventory, {"duration": 2}, limit="h1", baseline="v1"), project, said.append,
                     no_docker)
    assert kept.stopped is None and kept.document["repeats"] == 3
    assert said[0] == "benchmark of every host (wrk, 16 connections, 2 s, /, 3 rounds)"
    assert said[-1] == f"baseline v1: {BaselineStore(project, inventory).path('v1')}"
    compared = run_bench(BenchRequest(inventory, compare="v1"), project, said.append, no_docker)
    assert isinstance(compared.stopped, BenchRegressed) and compared.document["regressed"] == ["h1 nginx",
                                                                                                "fleet nginx"]
    assert Path(compared.document["path"]).is_file() and Path(compared.document["plot"]).is_file()
    assert asked == [(BenchLoad(duration=2), "h1", False, None)] * 3 + [(BenchLoad(duration=2), None, False, None)] * 3


# -- the CLI's refusals, before any host is asked ----------------------------------------------------------------
@pytest.fixture()
def nowhere(tmp_path) -> tuple[Path, dict[str, str]]:
    """A project root of its own (DEPLOYKIT_ROOT) and an inventory whose web group is empty: had the command gone
    as far as a benchmark, ansible-runner would have left its folder under .deploykit/runner."""
    inventory = tmp_path / "inventory" / "hosts.yml"
    inventory.parent.mkdir()
    inventory.write_text("all:\n  children:\n    web:\n      hosts: {}\n", encoding="utf-8")
    return inventory, {"DEPLOYKIT_ROOT": str(tmp_path)}


def refused(inventory: Path, env: dict[str, str], *args: str) -> str:
    run = deploy("bench", "-i", str(inventory), *args, env=env, check=False)
    assert run.returncode == 2, run.stdout + run.stderr
    assert not (Path(env["DEPLOYKIT_ROOT"]) / ".deploykit" / "runner").exists(), "a playbook ran"
    return run.stderr


def test_the_cli_refuses_bad_baselines_and_comparisons_before_any_host_is_asked(nowhere):
    inventory, env = nowhere
    assert "bad baseline name '../up'" in refused(inventory, env, "--baseline", "../up")
    assert "no baseline 'before'" in refused(inventory, env, "--compare", "before")
    assert "--repeats must be 1-20, not 0" in refused(inventory, env, "--repeats", "0")
    assert "takes no --baseline" in refused(inventory, env, "--matrix", "--baseline", "b")
    store = BaselineStore(Project(root=Path(env["DEPLOYKIT_ROOT"])), inventory)
    store.save(Baseline.measured("before", inventory, None, BenchLoad(duration=3), False, rounds_of({"h1": 100}), {}))
    err = refused(inventory, env, "--compare", "after")
    assert "no baseline 'after'" in err and "hint: baselines kept: before" in err
    err = refused(inventory, env, "--compare", "before", "--duration", "9")
    assert "measured under another load: duration 9 (the baseline's: 3)" in err
    err = refused(inventory, env, "--compare", "before", "--project", str(DJANGO_DIR))
    assert "would load django-demo" in err


def test_baseline_then_compare_through_the_cli_exits_3_on_a_regression(nowhere, monkeypatch, capsys):
    """`deploy bench --baseline` then `--compare`, in this process, with each round's measurement given (the
    measuring itself is the lab's): the baseline's file, the table, the JSON, the plot and the exit codes."""
    from deploy_tool import bench
    from deploy_tool.cli import main

    inventory, env = nowhere
    monkeypatch.setenv("DEPLOYKIT_ROOT", env["DEPLOYKIT_ROOT"])
    figures = iter([100, 104, 98, 101, 99, 100, 70, 71, 69])  # the baseline, a comparison within noise, a slower
    asked = []

    def measure(project, inventory, load, limit=None, direct=False, emit=None, spec=None):
        asked.append(load)
        return {"h1": {"nginx": result(next(figures))}}

    monkeypatch.setattr(bench, "measure", measure)
    assert main(["bench", "-i", str(inventory), "--baseline", "v1.1", "--duration", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 rounds" in out and "rps spread" in out.splitlines()[-3] and "baselines/v1.1.json" in out
    assert main(["bench", "-i", str(inventory), "--compare", "v1.1", "--json"]) == 0  # 101 against 100
    document = json.loads(capsys.readouterr().out)
    assert [row["verdict"] for row in document["rows"]] == ["within noise", "within noise"]
    assert document["path"].endswith("-v1.1.json") and document["plot"] == document["path"][:-5] + ".png"
    assert Path(document["plot"]).read_bytes()[:4] == b"\x89PNG" and asked[-1] == BenchLoad(duration=2)
    assert json.loads(Path(document["path"]).read_text())["baseline"] == "v1.1"
    assert main(["bench", "-i", str(inventory), "--compare", "v1.1"]) == 3  # 70 against 100
    captured = capsys.readouterr()
    assert any(line.startswith("h1 nginx") and line.endswith("regression") for line in captured.out.splitlines())
    assert "regression against baseline v1.1: h1 nginx: req/s -30%, beyond the band of 6%" in captured.err
    assert len(asked) == 9
