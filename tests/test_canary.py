"""A canary rollout without a fleet: its batches, its judgement against the hosts still on the old release, the
release it is compared with, and the refusals that come before any host is touched. On the lab:
tests/test_bench_lab.py (a slow release stops after its canary; a good one reaches every host)."""

from __future__ import annotations

import pytest

from conftest import FLASK_DIR, deploy
from deploy_tool.appspec import load
from deploy_tool.bench import Gate
from deploy_tool.canary import CanaryStopped, plan, serving_release
from deploy_tool.deploy import DeployRequest
from deploy_tool.errors import DeployError
from deploy_tool.flow import DeployReport
from deploy_tool.journal import DeployLock, audit
from deploy_tool.project import Project

HOSTS = ["web-1", "web-2", "web-3", "web-4", "web-5"]
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def result(rps: float, p90: float = 10.0) -> dict:
    return {"rps": rps, "failed": 0, "p90_ms": p90}


@pytest.mark.parametrize("canary, batch, batches", [
    ("1", "100%", [["web-1"], ["web-2", "web-3", "web-4", "web-5"]]),
    ("2", "2", [["web-1", "web-2"], ["web-3", "web-4"], ["web-5"]]),
    ("10%", "40%", [["web-1"], ["web-2", "web-3"], ["web-4", "web-5"]]),  # rounded up: 0.5 -> 1, 2
    ("80%", "1", [["web-1", "web-2", "web-3", "web-4"], ["web-5"]]),
])
def test_the_canary_goes_first_and_the_rest_follows_batch_by_batch(canary, batch, batches):
    assert plan(HOSTS, canary, batch) == batches


@pytest.mark.parametrize("canary, said", [("5", "leaves none on the old release"), ("100%", "leaves none"),
                                          ("0", "invalid canary"), ("1.5", "invalid canary"),
                                          ("101%", "invalid canary")])
def test_a_canary_that_leaves_nothing_to_compare_with_is_refused(canary, said):
    with pytest.raises(DeployError, match=said):
        plan(HOSTS, canary, "100%")


def test_a_canary_slower_than_the_hosts_still_on_the_old_release_is_found():
    gate = Gate(threshold=50)
    control = {"web-2": result(400, 20), "web-3": result(300, 30)}
    # 200 ms more per page: the rate falls and p90 rises far beyond the control hosts' median
    found = gate.against_control({"web-1": result(18, 850)}, control, "1.0.0")
    assert [line.split(":")[0] for line in found] == ["web-1", "web-1"]
    assert "95% below 350 of the hosts on 1.0.0 (web-2, web-3), measured at the same time" in found[0]
    assert "p90 850 ms, above 25 ms" in found[1]


def test_a_canary_within_the_threshold_or_a_few_ms_slower_passes():
    gate = Gate(threshold=50)
    control = {"web-2": result(400, 6), "web-3": result(300, 8)}
    assert gate.against_control({"web-1": result(250, 20)}, control, "1.0.0") == []  # 29% fewer; p90 +13 ms
    assert gate.against_control({"web-1": result(100, 80)}, {}, "1.0.0") == []  # no control: nothing to judge
    assert Gate(threshold=50, failures_only=True).against_control({"web-1": result(1, 900)}, control, "1") == []


def test_against_its_previous_release_a_canary_is_judged_by_how_it_moved_beside_its_control():
    """The lab's noise: between two runs a host's figures change by half. The control hosts' own change since the
    previous release is the moment's; a canary is slower than its previous release only beyond that."""
    gate = Gate(threshold=50)
    before = {"web-1": result(520, 50), "web-2": result(155, 1050), "web-3": result(76, 850)}
    # measured on the lab, 2026-11-30: the canary at 62% of its previous run, its control at 72% and 154%: passes
    control = {"web-2": result(111, 380), "web-3": result(117, 358)}
    assert gate.against_control({"web-1": result(324, 105)}, control, "1.0.0", before) == []
    # the same moment, the canary at 20% of its previous run while its control moved to 113%: fails
    found = gate.against_control({"web-1": result(104, 105)}, control, "1.0.0", before)
    assert len(found) == 1 and "20% of the previous release's 520 there" in found[0]
    assert "went to 113% of theirs: 82% below" in found[0]


def request(project: Project) -> DeployRequest:
    return DeployRequest(inventory=project.root / "inv", version="1.1.0", spec=load(FLASK_DIR))


def test_the_canary_is_compared_with_the_release_the_fleet_serves(tmp_path):
    project = Project(tmp_path)
    (tmp_path / "inv").mkdir()
    with pytest.raises(DeployError, match="deploy the first release without --canary"):
        serving_release(project, request(project))
    line = {"inventory": str(tmp_path / "inv"), "variant": "gunicorn-sync", "app": "flask-demo"}
    audit(project, {**line, "action": "deploy", "version": "1.0.0", "result": "ok"})
    assert serving_release(project, request(project))["version"] == "1.0.0"
    audit(project, {**line, "action": "deploy", "version": "1.0.1", "result": "failed"})
    with pytest.raises(DeployError, match="ended failed") as refused:
        serving_release(project, request(project))
    assert "deploy rollback" in str(refused.value)
    audit(project, {**line, "action": "rollback", "version": "1.0.0", "result": "ok"})
    assert serving_release(project, request(project))["version"] == "1.0.0"


def test_a_stopped_canary_exits_3():
    assert CanaryStopped("stopped", "hint", DeployReport("deploy", "1")).exit_code == 3
    assert DeployError("other").exit_code == 2


def test_the_lock_held_over_the_batches_hands_its_stale_token_to_each(tmp_path):
    """The first batch's playbook takes the fleet's lock: it must know the stale lock the rollout took over."""
    project = Project(tmp_path)
    inventory = tmp_path / "inv"
    inventory.mkdir()
    with DeployLock.acquire(project, inventory, "deploy", "1") as first:
        first.path.write_text(first.path.read_text().replace(f'"pid": {first.holder["pid"]}', '"pid": 999999999'))
        with DeployLock.acquire(project, inventory, "deploy", "2") as outer:
            assert outer.stale_token == first.token and not outer.nested
            inner = DeployLock.acquire(project, inventory, "deploy", "2", nested=True)
            assert inner.nested and inner.token == outer.token and inner.stale_token == first.token


@pytest.mark.parametrize("args, said", [
    (["--canary", "3"], "a canary of 3 of the 3 hosts leaves none"),
    (["--canary", "x"], "invalid canary"),
    (["--canary", "1", "--no-smoke"], "cannot run with --no-smoke"),
])
def test_a_bad_canary_is_refused_before_any_host(tmp_path, args, said):
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts:\n        web-1: {}\n"
                                        "        web-2: {}\n        web-3: {}\n")
    result = deploy("-i", str(tmp_path), "--version", "1.0.0", *args, check=False, cwd=FLASK_DIR, env=NO_ENGINE)
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert "Docker" not in result.stderr
