"""Benchmarks that tell a regression from noise, without a fleet: the statistics of repeated rounds (median,
spread, noise band), the verdict of a comparison with a baseline (hosts added and removed among them), the
baseline store and its refusals, the matrix's interleaved rounds and its stated result, and the `deploy bench`
refusals that come before any host is asked (the real CLI, in a subprocess)."""

from __future__ import annotations

import json

import pytest

from conftest import DJANGO_DIR
from deploy_tool import matrix as matrix_module
from deploy_tool.bench import (
    NOISE_FLOOR,
    BenchLoad,
    check_repeats,
    fleet_summary,
    format_table,
    noise_band,
    spread,
    summarize,
    summary_table,
)
from deploy_tool.errors import DeployError
from deploy_tool.journal import host_releases
from deploy_tool.matrix import MatrixEntry, interleaved, matrix_table, run_matrix, stated_result
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


