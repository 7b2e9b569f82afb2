"""The core builds what it runs as data: checked here without running anything."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from deploy_tool.errors import DeployError
from deploy_tool.images import apt_mirror, debootstrap_command, host_image_tag
from deploy_tool.lab import LabFleet, LabHost, inventory_document
from deploy_tool.phases import phases_line, playbook_phases
from deploy_tool.playbook import PlaybookRun, ProgressPrinter, RunOutcome
from deploy_tool.project import Project


def test_playbook_run_builds_runner_arguments(tmp_path):
    project = Project(tmp_path)
    run = PlaybookRun("site.yml", tmp_path / "inv", extravars={"a": 1}, limit="lab-1", check=True)
    kwargs = run.runner_kwargs(project)
    assert kwargs["playbook"] == str(tmp_path / "playbooks" / "site.yml")
    assert kwargs["inventory"] == str(tmp_path / "inv")
    assert kwargs["limit"] == "lab-1"
    assert kwargs["cmdline"] == "--check --diff"
    assert kwargs["extravars"] == {"a": 1}
    assert kwargs["envvars"]["ANSIBLE_CONFIG"] == str(tmp_path / "ansible.cfg")
    assert kwargs["private_data_dir"].startswith(str(tmp_path / ".deploykit" / "runner" / "inv-"))
    other = PlaybookRun("site.yml", tmp_path / "other" / "inv").runner_kwargs(project)
    assert other["private_data_dir"] != kwargs["private_data_dir"]  # fleets never share runner state
    plain = PlaybookRun("site.yml", tmp_path / "inv").runner_kwargs(project)
    assert "limit" not in plain and "cmdline" not in plain
    assert plain["timeout"] == 3600  # bounded: a hung host must not hold the deploy (and its lock) forever
    secret = PlaybookRun("deploy.yml", tmp_path / "inv", vars_files=(tmp_path / "my app" / "secrets.yml",),
                         vault_password_file=tmp_path / "pw").runner_kwargs(project)
    # the secrets file's path (quoted) and the password file's path: never the password or the secrets
    assert secret["cmdline"] == f"-e '@{tmp_path}/my app/secrets.yml' --vault-password-file {tmp_path}/pw"


def test_a_command_past_its_bound_is_stopped_with_an_error_naming_it():
    import subprocess
    import time

    from deploy_tool import external

    began = time.monotonic()
    with pytest.raises(DeployError, match="sleeping did not finish within 1 s: sleep 30"):
        external.run(["sleep", "30"], "sleeping", 1)
    process = subprocess.Popen(["sleep", "30"])
    with pytest.raises(DeployError, match="a sleeper did not finish within 1 s"):
        external.finish(process, "a sleeper", 1)
    assert process.poll() is not None and time.monotonic() - began < 10


def test_a_command_in_a_container_returns_its_output_or_one_error_naming_it(docker_client):
    """external.exec_in on this machine's real engine: the output of a command that ran; a command that failed, or
    that could not start (no such file: not tried again), is one DeployError naming it (or the `what` given in its
    place, so that a password in the command is not printed)."""
    import uuid

    from deploy_tool import external

    base = docker_client.images.list("deploykit/debian")[0]  # bootstrap's base image of the lab hosts
    container = docker_client.containers.run(base.id, ["sleep", "60"], name=f"exectest-{uuid.uuid4().hex[:8]}",
                                             entrypoint=[], detach=True)
    try:
        assert external.exec_in(container, ["sh", "-c", "echo hello"]) == "hello\n"
        with pytest.raises(DeployError, match=r"sh -c echo no; exit 3 failed in container exectest-\w+: no"):
            external.exec_in(container, ["sh", "-c", "echo no; exit 3"])
        with pytest.raises(DeployError, match="^setting a password failed") as raised:
            external.exec_in(container, ["/no/such/tool", "s3cret"], "setting a password")
        assert "s3cret" not in str(raised.value)
    finally:
        container.remove(force=True)


def test_progress_printer_reports_tasks_once_and_collects_failures():
    lines: list[str] = []
    printer = ProgressPrinter(lines.append)
    events = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Install"}},
        {"event": "playbook_on_task_start", "event_data": {"task": "Install"}},
        {"event": "runner_on_ok", "event_data": {"host": "h1", "res": {"changed": True}}},
        {"event": "runner_on_failed", "event_data": {"host": "h2", "task": "Install", "res": {"msg": "no disk"}}},
        {"event": "runner_on_failed", "event_data": {"host": "h3", "task": "Install", "ignore_errors": True,
                                                     "res": {"msg": "fine"}}},
        {"event": "runner_on_unreachable", "event_data": {"host": "h4", "task": "Install",
                                                          "res": {"msg": "ssh: timeout"}}},
    ]
    for event in events:
        printer(event)
    assert lines == ["  task: Install", "    h1: changed", "    h2: FAILED: no disk", "    h3: failed (ignored)",
                     "    h4: UNREACHABLE: ssh: timeout"]
    assert [(f.host, f.message) for f in printer.failures] == [("h2", "no disk"), ("h4", "ssh: timeout")]


def test_a_runs_tasks_are_timed_from_their_first_start_to_their_last_end_and_grouped_by_what_they_do():
    printer = ProgressPrinter(lambda _: None)

    def result(host, task, role, action, path, start, end, kind="runner_on_ok"):
        printer({"event": kind, "event_data": {
            "host": host, "task": task, "task_uuid": task, "role": role, "resolved_action": action,
            "task_path": path, "start": f"2026-11-30T10:00:{start:06.3f}", "end": f"2026-11-30T10:00:{end:06.3f}"}})

    result("h1", "Take the lock", "", "deploykit_lock", "/p/playbooks/deploy.yml:20", 1.0, 1.5)
    result("h1", "Ready the host", "app", "deploykit_stage", "/p/roles/app/tasks/image.yml:4", 2.0, 2.5)
    result("h2", "Ready the host", "app", "deploykit_stage", "/p/roles/app/tasks/image.yml:4", 2.1, 3.0)
    result("h1", "Copy the archive", "app", "ansible.builtin.copy", "/p/roles/app/tasks/image.yml:20", 3.0, 3.1,
           kind="runner_on_skipped")
    result("h1", "Run the release command", "app", "community.docker.docker_container", "/p/roles/app/tasks/run.yml:2",
           3.2, 5.2)
    result("h1", "Swap", "app", "deploykit_swap", "/p/roles/app/tasks/run.yml:30", 5.5, 12.5)
    result("h2", "Swap", "app", "deploykit_swap", "/p/roles/app/tasks/run.yml:30", 5.5, 13.5)
    result("h1", "Write nginx.conf", "nginx", "ansible.builtin.template", "/p/roles/nginx/tasks/configure.yml:2",
           14.0, 15.0)
    result("h1", "Check through nginx", "", "deploykit_probe", "/p/playbooks/deploy.yml:50", 15.0, 16.0)
    outcome = RunOutcome("successful", 0, {}, [], tasks=list(printer.tasks.values()),
                         started=datetime.fromisoformat("2026-11-30T10:00:00").timestamp(),
                         ended=datetime.fromisoformat("2026-11-30T10:00:17").timestamp())
    assert playbook_phases(outcome) == {"fleet lock": 0.5, "ready host, ship image": 1.1, "release command": 2.0,
                                        "swap": 8.0, "nginx": 1.0, "check through nginx": 1.0, "ansible": 3.4}
    assert phases_line({"swap": 8.0, "total": 17.25}) == "TIME: swap 8.0 s, total 17.2 s"


def test_outcome_recap_names_unreachable_hosts():
    outcome = RunOutcome("failed", 2, {"ok": {"a": 3, "b": 1}, "changed": {"a": 1}, "dark": {"b": 1}}, [])
    assert outcome.recap() == {
        "a": {"ok": 3, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 0},
        "b": {"ok": 1, "changed": 0, "failed": 0, "unreachable": 1, "skipped": 0},
    }
    assert outcome.total_changed() == 1


def test_inventory_document_pins_key_and_known_hosts():
    hosts = [LabHost("lab-1", "deploykit-lab-1", "10.0.0.2", "running", 12)]
    document = inventory_document(hosts, Path("/k/id"), Path("/k/known"), "lab")
    assert document["all"]["children"]["web"]["hosts"] == {"lab-1": {"ansible_host": "10.0.0.2",
                                                                      "deploykit_lab_debian": 12}}
    assert document["all"]["children"]["db"]["hosts"] == {"lab-1": {}}
    variables = document["all"]["vars"]
    assert variables["ansible_ssh_private_key_file"] == "/k/id"
    assert "UserKnownHostsFile=/k/known" in variables["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in variables["ansible_ssh_common_args"]


def test_default_fleet_writes_the_committed_inventory_dir(tmp_path):
    project = Project(tmp_path)
    assert LabFleet(project, client=None, fleet="lab").inventory_path == tmp_path / "inventories/lab/hosts.yml"
    other = LabFleet(project, client=None, fleet="mol-base")
    assert other.inventory_path == tmp_path / ".deploykit/fleets/mol-base/hosts.yml"
    assert other.container_name(2) == "deploykit-mol-base-2"


def test_named_inventory_wins_over_a_same_named_folder(tmp_path, monkeypatch):
    (tmp_path / "inventories" / "lab").mkdir(parents=True)
    (tmp_path / "lab").mkdir()
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path)
    assert project.inventory_dir("lab") == tmp_path / "inventories" / "lab"
    assert project.inventory_dir("./lab") == tmp_path / "lab"


def test_apt_mirror_reads_deb822_sources(tmp_path):
    (tmp_path / "a.sources").write_text(
        "Types: deb\nURIs: http://mirror.test/debian-security\n\n"
        "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm\n")
    assert apt_mirror(str(tmp_path / "*.sources"), str(tmp_path / "none")) == "http://mirror.test/debian"


def test_apt_mirror_reads_a_legacy_list(tmp_path):
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://legacy.test/debian bookworm main\n")
    assert apt_mirror(str(tmp_path / "*.sources"), str(tmp_path / "sources.list")) == "http://legacy.test/debian"


def test_apt_mirror_missing_is_a_deploy_error(tmp_path):
    with pytest.raises(DeployError, match="no Debian mirror"):
        apt_mirror(str(tmp_path / "*.sources"), str(tmp_path / "none"))


def test_debootstrap_command():
    assert debootstrap_command(Path("/t"), "http://m") == [
        "debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", "/t", "http://m"]


def test_host_image_tag_follows_its_inputs(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    first = host_image_tag(tmp_path, "sha256:base")
    assert first == host_image_tag(tmp_path, "sha256:base")
    assert first.startswith("deploykit/lab-host:")
    assert host_image_tag(tmp_path, "sha256:other") != first
    (tmp_path / "Dockerfile").write_text("FROM y\n")
    assert host_image_tag(tmp_path, "sha256:base") != first


def test_the_swap_window_load_ends_with_the_deploy_that_started_it(tmp_path):
    """A deploy killed mid-swap (SIGKILL: no cleanup) must not leave its load client running for 600 s."""
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, {str(Project.locate().load_client)!r}, "
        "'--url', 'http://127.0.0.1:9/', "
        "'--concurrency', '2', '--rate', '20', '--duration', '600', '--with-parent'], stdout=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":  # ended, not yet reaped
                break
        except FileNotFoundError:
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the load client outlived its parent by 15 s")


def test_a_playbook_run_gets_nothing_of_the_run_before(tmp_path):
    """ansible-runner keeps env/extravars and env/cmdline in its folder and reads them in every later run:
    a provision after a deploy got the deploy's variables and vault password file, and a run after a --check
    one ran in check mode. Real runs of a playbook on this machine (local connection)."""
    from deploy_tool.playbook import run_playbook

    project = Project(tmp_path)
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "show.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Say what this run got\n"
        "      ansible.builtin.debug:\n"
        "        msg: \"x={{ x | default('none') }} check={{ ansible_check_mode }}\"\n")
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    here: {ansible_connection: local, "
                         f"ansible_python_interpreter: {sys.executable}}}\n")

    def said(run: PlaybookRun) -> str:
        outcome = run_playbook(run, project, lambda line: None)
        stdout = (tmp_path / ".deploykit" / "runner").rglob("stdout")
        return max(stdout, key=lambda path: path.stat().st_mtime).read_text() + str(outcome.rc)

    assert "x=first check=True" in said(PlaybookRun("show.yml", inventory, extravars={"x": "first"}, check=True))
    assert "x=none check=False" in said(PlaybookRun("show.yml", inventory))


def test_lab_fleets_started_at_once_share_one_key_pair_and_one_secrets_file(tmp_path):
    """The suite starts its molecule scenarios' fleets in parallel: each `deploy lab up` must find or make the
    same key pair and lab secrets (ssh-keygen once asked "Overwrite (y/n)?" of the second and failed)."""
    script = (
        "import sys; from pathlib import Path\n"
        "from deploy_tool.lab import LabFleet; from deploy_tool.project import Project\n"
        "fleet = LabFleet(Project(Path(sys.argv[1])), client=None, fleet=sys.argv[2])\n"
        "fleet._ensure_ssh_key(); fleet._ensure_secrets()\n"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"f{n}"], stderr=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parent.parent) for n in range(8)]
    errors = [run.communicate(timeout=60)[1] for run in runs]
    assert [run.returncode for run in runs] == [0] * 8, errors
    key = tmp_path / ".deploykit" / "ssh" / "id_ed25519"
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == key.with_suffix(".pub").read_text().split()[:2]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    secrets = tmp_path / "inventories" / "lab" / "group_vars" / "all" / "secrets.yml"
    assert "app_secret_key" in secrets.read_text() and oct(secrets.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in key.parent.iterdir()) == [".keygen.lock", "id_ed25519", "id_ed25519.pub"]
    assert [p.name for p in secrets.parent.iterdir()] == ["secrets.yml"]
