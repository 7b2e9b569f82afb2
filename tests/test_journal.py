"""The deploy lock and the audit log that rollback reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FLASK_DIR, deploy
from deploy_tool.appspec import load
from deploy_tool.errors import DeployError
from deploy_tool.journal import DeployLock, audit, lock_path, previous_release
from deploy_tool.project import Project
from deploy_tool.variants import VARIANTS_FILE


@pytest.fixture
def project(tmp_path):
    (tmp_path / "inv").mkdir()
    return Project(tmp_path)


def test_second_deploy_is_refused_naming_who_holds_the_lock(project):
    inventory = project.root / "inv"
    with DeployLock.acquire(project, inventory, "deploy", "1.0.0") as lock:
        with pytest.raises(DeployError) as refused:
            DeployLock.acquire(project, inventory, "deploy", "1.0.1")
        message = str(refused.value)
        assert f"(pid {lock.holder['pid']}) running deploy 1.0.0" in message
        assert f"{lock.holder['user']}@{lock.holder['host']}" in message
        assert str(lock.path) in message  # the hint says which file to remove if that process is gone
    assert not lock.path.exists()  # released on exit


def test_a_lock_left_by_a_killed_deploy_is_taken_over(project, caplog):
    inventory = project.root / "inv"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    lock = DeployLock.acquire(project, inventory, "deploy", "1.0.0")
    lock.path.write_text(json.dumps({**lock.holder, "pid": dead_pid}))
    taken = DeployLock.acquire(project, inventory, "deploy", "1.0.1")
    assert json.loads(taken.path.read_text())["version"] == "1.0.1"
    assert "stale deploy lock" in caplog.text
    taken.release()


def test_locks_are_per_inventory(project):
    (project.root / "other").mkdir()
    with DeployLock.acquire(project, project.root / "inv", "deploy", "1"), \
            DeployLock.acquire(project, project.root / "other", "deploy", "1"):
        pass


def record(project, version, result="ok", variant="uwsgi", action="deploy", **more):
    audit(project, {"action": action, "inventory": str(project.root / "inv"), "version": version,
                    "variant": variant, "app": "django", "strategy": "reuse-port", "result": result, **more})


def test_rollback_target_is_the_release_before_the_current(project):
    record(project, "1.0.0", variant="gunicorn-sync")
    record(project, "1.1.0")
    record(project, "1.2.0", result="failed")  # never live: not a rollback target, not current
    target = previous_release(project, project.root / "inv")
    assert (target["version"], target["variant"]) == ("1.0.0", "gunicorn-sync")
    assert previous_release(project, project.root / "inv", to="1.1.0")["version"] == "1.1.0"


@pytest.mark.parametrize("unfinished, why", [
    ({"result": "failed", "hosts": {"web-1": {"container": "app-1.2.0"}, "web-2": {"failed": True}}},
     "deploy of 1.2.0 at"),  # swapped in on web-1, failed on web-2: a partial rollout
    ({"result": "failed", "live_hosts": ["web-1"], "hosts": {}}, "may be live"),  # its last check failed
    ({"result": "regressed"}, "ended regressed"),  # its gate failed and it was left deployed
    ({"result": "interrupted"}, "ended interrupted"),  # where it stopped is not known
])
def test_a_release_that_may_be_live_after_the_last_good_one_is_rolled_back_to_that_one(project, unfinished, why):
    """After a partial rollout of 1.2.0 the fleet goes back to 1.1.0 (the last good release), not to 1.0.0."""
    record(project, "1.0.0")
    record(project, "1.1.0")
    record(project, "1.2.0", **unfinished)
    target = previous_release(project, project.root / "inv")
    assert target["version"] == "1.1.0" and why in target["reason"], target


def test_a_gate_that_fails_a_redeploy_of_the_serving_version_returns_to_that_version_as_it_was(project):
    """1.1.0 served as uwsgi; a deploy of 1.1.0 as gunicorn-sync regressed (audited before the gate's rollback runs):
    the fleet goes back to 1.1.0 as uwsgi, not to 1.0.0."""
    record(project, "1.0.0")
    record(project, "1.1.0", variant="uwsgi")
    record(project, "1.1.0", variant="gunicorn-sync", result="regressed")
    target = previous_release(project, project.root / "inv")
    assert (target["version"], target["variant"]) == ("1.1.0", "uwsgi")


def test_a_failed_deploy_that_swapped_no_host_changes_no_rollback_target(project):
    record(project, "1.0.0")
    record(project, "1.1.0")
    record(project, "1.2.0", result="failed", hosts={"web-1": {"failed": True, "msg": "never healthy"}})
    assert previous_release(project, project.root / "inv")["version"] == "1.0.0"


def test_a_rollback_cut_short_is_done_again(project):
    record(project, "1.0.0")
    record(project, "1.1.0")
    record(project, "1.0.0", action="rollback", result="failed", hosts={"web-1": {"container": "app-1.0.0"}})
    target = previous_release(project, project.root / "inv")
    assert target["version"] == "1.0.0" and "did not finish" in target["reason"]


def test_rollback_refuses_without_a_previous_release(project):
    with pytest.raises(DeployError, match="nothing to roll back to"):
        previous_release(project, project.root / "inv")
    record(project, "1.0.0")
    with pytest.raises(DeployError, match="only release 1.0.0"):
        previous_release(project, project.root / "inv")
    with pytest.raises(DeployError, match="release 9.9 was never deployed") as unknown:
        previous_release(project, project.root / "inv", to="9.9")
    assert "1.0.0" in str(unknown.value)


def test_rollback_command_refuses_cleanly_before_touching_hosts(tmp_path):
    result = deploy("rollback", "-i", str(tmp_path), check=False, env={"DOCKER_HOST": "unix:///nonexistent.sock"},
                    cwd=FLASK_DIR)
    assert result.returncode == 2
    assert "nothing to roll back to" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "invalid batch"), (["--batch", "150%"], "invalid batch"),
    (["--strategy", "rolling"], "unknown strategy"), (["--max-fail-percent", "101"], "--max-fail-percent"),
])
def test_bad_rolling_options_are_refused_before_docker(tmp_path, args, message):
    result = deploy("-i", str(tmp_path), "--version", "1.0.0", *args, check=False,
                    env={"DOCKER_HOST": "unix:///nonexistent.sock"}, cwd=FLASK_DIR)
    assert result.returncode == 2 and message in result.stderr


def test_a_gate_rollback_takes_the_lock_its_deploy_holds_without_releasing_it(project):
    inventory = project.root / "inventories" / "lab"
    outer = DeployLock.acquire(project, inventory, "deploy", "1.1.0")
    with DeployLock.acquire(project, inventory, "rollback", "1.0.0", nested=True) as inner:
        assert inner.nested
    assert outer.path.exists()  # still the deploy's
    outer.release()
    assert not outer.path.exists()


def test_damaged_audit_lines_are_skipped_with_a_warning_naming_them(project, caplog):
    """A line cut short (a full disk, a killed write), an entry lacking what a rollback needs, a line that is
    not an object: each is skipped, named with its line, and the rollback still finds its target."""
    record(project, "1.0.0")
    path = project.state_dir / "audit.log"
    with path.open("a") as handle:
        handle.write('{"action": "deploy", "inventory": "x", "vers\n[]\n')
        handle.write(json.dumps({"action": "deploy", "inventory": str(project.root / "inv"), "result": "ok",
                                 "version": "1.0.5"}) + "\n")  # no variant, no app
    record(project, "1.1.0")
    assert previous_release(project, project.root / "inv")["version"] == "1.0.0"
    warned = [r.getMessage() for r in caplog.records]
    assert any(f"{path} line 2 is damaged" in line for line in warned), warned
    assert any(f"{path} line 3 is damaged" in line for line in warned), warned


def test_the_audit_log_is_private_and_keeps_no_module_invocation(project):
    path = audit(project, {"action": "deploy", "hosts": {"web-1": {"container": "app-1", "invocation": {
        "module_args": {"env": {"DB_USER": "demo"}}}, "results": [{"invocation": {"x": 1}, "rps": 3}]}}})
    entry = json.loads(path.read_text().splitlines()[-1])
    assert entry["hosts"] == {"web-1": {"container": "app-1", "results": [{"rps": 3}]}}
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


@pytest.fixture
def flow_project(tmp_path, monkeypatch):
    """A project for run_deploy with everything before the playbook stubbed (the inventory's web hosts, the
    image): the tests replace run_playbook."""
    import shutil

    from conftest import ROOT
    from deploy_tool import flow
    from deploy_tool.playbook import PlaybookRun

    (tmp_path / VARIANTS_FILE).parent.mkdir(parents=True)
    shutil.copy(ROOT / VARIANTS_FILE, tmp_path / VARIANTS_FILE)
    (tmp_path / "inv").mkdir()
    monkeypatch.setattr(flow, "web_addresses", lambda inventory, limit: {"web-1": "127.0.0.1"})
    monkeypatch.setattr(flow, "prepare", lambda *args: PlaybookRun("deploy.yml", tmp_path / "inv"))
    RELEASED.clear()
    monkeypatch.setattr(flow.fleetlock, "release", lambda project, inventory, emit, token="", force=False, like=None:
                        RELEASED.append(token) or ("web-1", {}))
    return Project(tmp_path)


RELEASED: list[str] = []  # the fleet-lock tokens run_deploy released (fleetlock.release, stubbed by flow_project)


def last_audit_line(project):
    return json.loads((project.state_dir / "audit.log").read_text().splitlines()[-1])


@pytest.mark.parametrize("fails_at, result, error", [
    ("playbook", "interrupted", "KeyboardInterrupt"),  # Ctrl-C mid-swap: the line still says so
    ("smoke", "ok", "RuntimeError: wrk vanished"),  # swapped, then the smoke run failed: live, and said
])
def test_every_deploy_leaves_an_audit_line_whatever_stops_it(flow_project, monkeypatch, fails_at, result, error):
    from deploy_tool import flow
    from deploy_tool.bench import BenchLoad
    from deploy_tool.deploy import DeployRequest
    from deploy_tool.playbook import RunOutcome

    project = flow_project
    request = DeployRequest(inventory=project.root / "inv", version="1.2.0", spec=load(FLASK_DIR))

    tokens = []

    def playbook(run, *args):
        tokens.append(run.extravars["deploykit_lock_token"])  # the fleet's lock is taken with the deploy's token
        if fails_at == "playbook":
            raise KeyboardInterrupt
        return RunOutcome("successful", 0, {}, [], {"web-1": {"container": "app-1.2.0"}})

    def measure(*args, **kwargs):
        raise RuntimeError("wrk vanished")

    monkeypatch.setattr(flow, "run_playbook", playbook)
    monkeypatch.setattr(flow, "measure", measure)
    with pytest.raises((KeyboardInterrupt, RuntimeError)):
        flow.run_deploy(request, flow.Checks(smoke=BenchLoad(), report=False), project, lambda line: None)
    entry = last_audit_line(project)
    assert (entry["version"], entry["result"], entry["error"]) == ("1.2.0", result, error)
    assert ("hosts" in entry) == (fails_at == "smoke")
    assert len(tokens[0]) == 32 and tokens == RELEASED  # and released whatever stopped the deploy


def test_a_release_swapped_in_whose_check_through_nginx_fails_is_said_to_be_live(flow_project, monkeypatch):
    from deploy_tool import flow
    from deploy_tool.deploy import DeployRequest
    from deploy_tool.playbook import HostFailure, PlaybookFailed, RunOutcome

    project = flow_project

    def playbook(*args):
        failure = HostFailure("web-1", flow.LAST_CHECK, "header X-Deploykit-Release is '1.1.9', expected '1.2.0'")
        raise PlaybookFailed("playbook deploy.yml failed", "see its output",
                             RunOutcome("failed", 2, {}, [failure], {"web-1": {"container": "app-1.2.0"}}))

    monkeypatch.setattr(flow, "run_playbook", playbook)
    with pytest.raises(PlaybookFailed) as failed:
        flow.run_deploy(DeployRequest(inventory=project.root / "inv", version="1.2.0", spec=load(FLASK_DIR)),
                        flow.Checks(smoke=None, report=False), project, lambda line: None)
    assert "release 1.2.0 is LIVE on web-1" in str(failed.value)
    assert "`deploy rollback` returns those hosts" in str(failed.value)
    entry = last_audit_line(project)
    assert (entry["result"], entry["live_hosts"]) == ("failed", ["web-1"])


def test_the_matrix_holds_the_lock_throughout_and_restores_the_setup_whatever_stops_it(project, monkeypatch):
    """A matrix whose second entry fails: the setup deployed before is deployed again (in a finally), every deploy
    of the matrix ran inside its one lock (no other deploy could slip in between), and the lock is gone after."""
    import shutil

    from conftest import ROOT
    from deploy_tool import flow, matrix
    from deploy_tool.bench import BenchLoad
    from deploy_tool.deploy import DeployRequest

    (project.root / VARIANTS_FILE).parent.mkdir(parents=True)
    shutil.copy(ROOT / VARIANTS_FILE, project.root / VARIANTS_FILE)
    inventory = project.root / "inv"
    audit(project, {"action": "deploy", "inventory": str(inventory), "version": "1.0.0", "variant": "uwsgi",
                    "app": "flask-demo", "strategy": "reuse-port", "result": "ok"})
    deployed = []

    def run_deploy(request, checks, project_, emit, action, docker_client, inside_lock=False):
        with pytest.raises(DeployError, match="running bench --matrix 1.0.0"):  # held: a deploy would be refused
            DeployLock.acquire(project, inventory, "deploy", "9.9.9")
        deployed.append((request.variant, request.strategy, inside_lock))
        if len(deployed) == 2:
            raise RuntimeError("the second setup failed")

    released = []
    monkeypatch.setattr(flow, "run_deploy", run_deploy)
    monkeypatch.setattr(flow, "release_fleet_lock", lambda project_, run, token, emit: released.append(token))
    monkeypatch.setattr(matrix, "measure", lambda *args, **kwargs: {})
    base = DeployRequest(inventory=inventory, version="", spec=load(FLASK_DIR))
    with pytest.raises(RuntimeError, match="second setup failed"):
        matrix.bench_matrix(base, None, "gunicorn-sync,uwsgi-http,flup-prefork", BenchLoad(), project,
                            lambda line: None, lambda: None)
    assert deployed == [("gunicorn-sync", "recreate", True), ("uwsgi-http", "recreate", True),
                        ("uwsgi", "recreate", True)]  # the third entry never ran; the restore did
    assert len(released) == 1 and len(released[0]) == 32  # the fleet's lock, once, after the restore
    DeployLock.acquire(project, inventory, "deploy", "1.0.1").release()  # free again


@pytest.mark.parametrize("content", ["", '{"pid": "abc"}', '{"pid": 0}', '{"pid": true}', "[]", '"abc"',
                                     '{"user": "x"}', '{"pid": 1099511627776}'])
def test_a_lock_file_that_names_no_live_process_is_taken_over(project, content):
    """A file cut short, a pid that is no number, pid 0 (os.kill(0) would ask the whole process group): stale."""
    inventory = project.root / "inv"
    path = lock_path(project, inventory)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with DeployLock.acquire(project, inventory, "deploy", "1.0.1") as lock:
        assert json.loads(path.read_text())["pid"] == lock.holder["pid"] == os.getpid()


def test_an_inventory_directory_and_its_hosts_file_share_one_lock(project):
    inventory = project.root / "inv"
    (inventory / "hosts.yml").write_text("all: {}\n")
    (inventory / "hosts").write_text("[web]\nweb-1\n")  # an INI file without an extension
    assert lock_path(project, inventory) == lock_path(project, inventory / "hosts.yml") \
        == lock_path(project, inventory / "hosts")


def test_takers_of_a_stale_lock_at_once_get_it_one_at_a_time(project):
    """A lock left by a process that is gone, and eight processes taking it at once, each holding it a moment:
    never two hold it at the same time (before, two takers of a stale lock could both win: each removed the file,
    one then removed the other's)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = lock_path(project, project.root / "inv")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": int(dead.stdout), "action": "deploy"}))
    script = ("import sys, time\nfrom pathlib import Path\n"
              "from deploy_tool.errors import DeployError\nfrom deploy_tool.journal import DeployLock\n"
              "from deploy_tool.project import Project\n"
              "project = Project(Path(sys.argv[1]))\n"
              "try:\n"
              "    with DeployLock.acquire(project, project.root / 'inv', 'deploy', '1'):\n"
              "        began = time.time(); time.sleep(0.2); print('held', began, time.time(), flush=True)\n"
              "except DeployError:\n"
              "    print('refused', flush=True)\n")
    runs = [subprocess.Popen([sys.executable, "-c", script, str(project.root)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
            for _ in range(8)]
    outcomes = [run.communicate(timeout=60) for run in runs]
    held = sorted((float(line.split()[1]), float(line.split()[2])) for line, _ in outcomes if line.startswith("held"))
    assert held and len(held) + sum(line.startswith("refused") for line, _ in outcomes) == 8, outcomes
    for (_, end), (start, _) in zip(held, held[1:], strict=False):
        assert start >= end, held  # one holder at a time
    assert not path.exists()  # each holder released it
