"""library/deploykit_swap.py and its module_utils (deploykit_swapper.py and the parts it uses): what it would run,
checked as data (its effects are tested on the lab fleet)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

from conftest import MODULE_UTILS, ROOT, module_utils


@pytest.fixture(scope="module")
def swap():
    return load_module("deploykit_swap")


@pytest.fixture(scope="module")
def containers():
    return module_utils("deploykit_containers")


@pytest.fixture(scope="module")
def swapper():
    return module_utils("deploykit_swapper")


def params(**overrides):
    base = dict(app="deploykit-app", image="deploykit/flask-demo:1.2.0", release="1.2.0", strategy="reuse-port",
                env={"DEPLOYKIT_VARIANT": "uwsgi", "DEPLOYKIT_PORT": "8000"}, env_file="/etc/deploykit/app.env",
                user="10001:10001", read_only=True, tmpfs=["/tmp:size=64m"], cap_drop=["ALL"],
                security_opts=["no-new-privileges:true"], restart_policy="unless-stopped",
                labels={"io.deploykit.variant": "uwsgi"}, stop_timeout=40,
                health={"protocol": "uwsgi", "port": 8000}, progress_file=None, volumes=[], limits={})
    base.update(overrides)
    return base


def test_run_argv_is_host_network_hardened_and_names_its_instance(containers):
    argv = containers.docker_run_argv(params(), "deploykit-app-1.2.0-abcdef", "abcdef123456")
    assert argv[:5] == ["docker", "run", "--detach", "--name", "deploykit-app-1.2.0-abcdef"]
    joined = " ".join(argv)
    for part in ("--network host", "--restart no", "--stop-timeout 40", "--read-only",
                 "--tmpfs /tmp:size=64m", "--cap-drop ALL", "--security-opt no-new-privileges:true",
                 "--user 10001:10001", "--env-file /etc/deploykit/app.env",
                 "--label io.deploykit.app=deploykit-app", "--label io.deploykit.release=1.2.0",
                 "--label io.deploykit.spec=abcdef123456", "--label io.deploykit.protocol=uwsgi",
                 "--env DEPLOYKIT_INSTANCE=deploykit-app-1.2.0-abcdef", "--label io.deploykit.port=8000",
                 "--env DEPLOYKIT_PORT=8000"):
        assert part in joined
    assert argv[-1] == "deploykit/flask-demo:1.2.0"
    assert "SECRET" not in joined  # secrets only through the env file
    assert "--memory" not in joined and "--volume" not in joined


def test_limits_and_mounts_reach_docker_run_and_the_spec_hash_only_when_set(containers):
    limited = params(limits={"memory": "1g", "cpus": "", "pids": 512}, volumes=["/var/lib/x:/data"])
    joined = " ".join(containers.docker_run_argv(limited, "n", "abcdef123456"))
    assert "--memory 1g" in joined and "--pids-limit 512" in joined and "--cpus" not in joined
    assert "--volume /var/lib/x:/data" in joined
    # a container made before these options existed keeps its hash (no swap for nothing after an upgrade)
    assert containers.spec_hash(params(), "sha256:a") == containers.spec_hash(
        {k: v for k, v in params().items() if k not in ("limits", "volumes")}, "sha256:a")
    assert containers.spec_hash(limited, "sha256:a") != containers.spec_hash(params(), "sha256:a")


def test_spec_hash_changes_with_image_and_settings_only(containers):
    first = containers.spec_hash(params(), "sha256:aaa")
    assert first == containers.spec_hash(params(release="other"), "sha256:aaa")  # the release label is not a setting
    assert first != containers.spec_hash(params(), "sha256:bbb")
    assert first != containers.spec_hash(params(env={"DEPLOYKIT_VARIANT": "uwsgi-http"}), "sha256:aaa")
    assert first != containers.spec_hash(params(stop_timeout=20), "sha256:aaa")


def test_container_names_are_safe_for_docker(containers):
    assert (containers.container_name("deploykit-app", "1.2.0+build/7", "abcdef123456")
            == "deploykit-app-1.2.0-build-7-abcdef")


MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))


def load_module(name: str):
    module_utils(MODULE_UTILS[-1])
    spec = importlib.util.spec_from_file_location(name, ROOT / "library" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_reads_every_module(name):
    import os
    import subprocess

    result = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "--json", name],
                            env={**os.environ, "ANSIBLE_LIBRARY": str(ROOT / "library")},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[name]
    assert doc["examples"].strip() and doc["return"], name


@pytest.mark.parametrize("name", MODULES)
def test_every_module_documents_its_argument_spec(name):
    import yaml

    module = load_module(name)
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
    assert sorted(documented) == sorted(module.ARGUMENT_SPEC)
    for option, spec in module.ARGUMENT_SPEC.items():
        assert documented[option]["type"] == spec["type"], option
        assert documented[option].get("default") == spec.get("default"), option
        assert documented[option].get("choices") == spec.get("choices"), option
        if "options" in spec:
            assert sorted(documented[option]["suboptions"]) == sorted(spec["options"]), option


def test_blue_green_listens_on_the_port_no_running_container_holds(containers, swapper):
    argv = " ".join(containers.docker_run_argv(params(strategy="blue-green"), "n", "abcdef123456", 8001))
    assert "--label io.deploykit.port=8001" in argv and "--env DEPLOYKIT_PORT=8001" in argv

    class Module:
        def __init__(self, **overrides):
            self.params = params(**overrides)
            self.check_mode = False

    def port(strategy, running, ports=()):
        strategy = swapper.Swapper(Module(strategy=strategy, ports=list(ports))).strategy
        found = [containers.Container(f"c{i}", True, "spec", "1.0", "http", port, "unless-stopped")
                 for i, port in enumerate(running)]
        return strategy.listen_port(found)

    assert port("blue-green", [8000]) == 8001
    assert port("blue-green", [8001]) == 8000
    assert port("blue-green", []) == 8000
    assert port("blue-green", [9000], ports=(9000, 9100)) == 9100
    assert port("reuse-port", [8001]) == 8001  # joins the running container, wherever blue-green left it
    assert port("recreate", [8001]) == 8000
    with pytest.raises(containers.SwapError, match="both blue-green ports"):
        port("blue-green", [8000, 8001])


def test_the_strategies_are_the_modules_choices(swap, swapper):
    """One place names the strategies (module_utils/deploykit_strategies.py): the module's choices are its keys,
    and the swapper takes the strategy by its name."""
    assert swap.ARGUMENT_SPEC["strategy"]["choices"] == ["reuse-port", "recreate", "blue-green"]
    for name in swap.ARGUMENT_SPEC["strategy"]["choices"]:
        strategy = swapper.Swapper(type("Module", (), dict(params=params(strategy=name), check_mode=False))()).strategy
        assert type(strategy).__name__ == name.title().replace("-", "")


def test_a_held_old_container_is_stopped_by_its_pidfd_and_waited_for(swapper, tmp_path):
    """The old container's server gets its stop signal through the pidfd taken while the new one was gated, and
    stop() returns once that process has exited (here a real process that drains 0.3 s), with no docker call;
    one that outlives stop_timeout is killed by docker."""
    import os
    import subprocess
    import time

    calls = []

    class Module:
        def __init__(self, stop_timeout):
            self.params = params(stop_timeout=stop_timeout, progress_file=str(tmp_path / "swap.progress"))
            self.check_mode = False

        def run_command(self, argv):
            calls.append(argv)
            return 0, "", ""

    draining = ("import signal, sys, time\n"
                "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.3), sys.exit(0)))\n"
                "print('ready', flush=True)\n"
                "time.sleep(30)\n")
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                "time.sleep(30)")
    children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
                for code in (draining, stubborn)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        swap = swapper.Swapper(Module(stop_timeout=10))
        held = {"old": (os.pidfd_open(children[0].pid), "SIGTERM", "id-old", False)}
        began = time.monotonic()
        swap.drain.stop(["old"], held, step="old_signalled")
        took = time.monotonic() - began
        assert children[0].wait(timeout=1) == 0  # exited by itself, gracefully
        assert 0.3 <= took < 10, took  # it waited for the exit, not for stop_timeout
        assert calls == [] and held == {} and "old_signalled" in swap.timings
        # each step is written to the progress file as it happens (tests inject faults at a step with it)
        progress = [json.loads(line) for line in (tmp_path / "swap.progress").read_text().splitlines()]
        assert progress == [{"step": "old_signalled", "at": swap.timings["old_signalled"]}]
        held = {"stubborn": (os.pidfd_open(children[1].pid), "SIGTERM", "id-stubborn", False)}
        swapper.Swapper(Module(stop_timeout=1)).drain.stop(["stubborn"], held)
        assert children[1].poll() is None  # it ignored SIGTERM: after stop_timeout, docker kills the container
        assert [argv[argv.index("docker"):] for argv in calls] == [["docker", "kill", "stubborn"]]
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_an_old_container_that_lingers_after_its_drain_is_killed_only_once_its_last_connection_closed(
        swapper, monkeypatch, tmp_path):
    """A server that answers the connection it holds 0.5 s after SIGTERM, then lingers with its listener still
    open (as a uWSGI master does until its next look at its workers): stop() pauses and kills it exit_grace
    seconds after that connection closed, not before: the client got the whole answer. Real sockets and
    processes; the container is the child process (its cgroup is looked up by pid here)."""
    import os
    import socket
    import subprocess
    import time

    class Module:
        params = params(stop_timeout=20, exit_grace=0.3, progress_file=str(tmp_path / "swap.progress"))
        check_mode = False

        def run_command(self, argv):
            raise AssertionError(f"no docker call is needed: {argv}")

    server = ("import signal, socket, sys, time\n"
              "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n"
              "listener = socket.socket()\n"
              "listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
              "listener.bind(('127.0.0.1', 0)); listener.listen(8)\n"
              "print(listener.getsockname()[1], flush=True)\n"
              "connection, _ = listener.accept()\n"
              "signal.sigwait([signal.SIGTERM])\n"
              "time.sleep(0.5)\n"
              "connection.sendall(b'answer'); connection.close()\n"
              "time.sleep(30)\n")
    child = subprocess.Popen([sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        client = socket.create_connection(("127.0.0.1", port))
        host = module_utils("deploykit_host")  # the host's processes and sockets, which the swap's drain uses
        monkeypatch.setattr(host, "in_containers", lambda pid, ids: ids == ["old"] and int(pid) == child.pid)
        deadline = time.monotonic() + 5
        while len(host.held_sockets(host.container_pids(["old"]), port)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # until it accepted the connection
        assert sorted(host.held_sockets(host.container_pids(["old"]), port).values()) == ["01", host.LISTEN]
        swap = swapper.Swapper(Module())
        began = time.monotonic()
        swap.drain.stop(["old"], {"old": (os.pidfd_open(child.pid), "SIGTERM", "old", True)},
                           step="old_signalled", port=port)
        took = time.monotonic() - began
        assert child.wait(timeout=1) == -9  # killed: it would have slept 30 s
        assert client.recv(100) == b"answer"
        t = swap.timings
        assert "old_closed" not in t, t  # it kept its listener to the end
        assert t["old_signalled"] < t["old_drained"] < t["old_killed"], t
        assert t["old_drained"] - t["old_signalled"] >= 0.45, t  # not before its connection closed
        assert t["old_killed"] - t["old_drained"] >= 0.3, t
        assert took < 5, took
    finally:
        child.kill()
        child.wait()


def test_an_error_ends_with_the_containers_last_words(containers):
    logs = ("Traceback (most recent call last):\n  ...\n"
            "deploykit_serve.UnhealthyApp: GET /no-such-page (Host notes.lab) answered 404 NOT FOUND: <!doctype html>\n"
            "\n"
            "deploykit-serve: the app app cannot be loaded or is not healthy: not binding 8000\n")
    said = containers.last_words(logs)
    assert said.startswith("; its last words: ")
    assert "answered 404 NOT FOUND" in said and said.endswith("not binding 8000")
    assert containers.last_words("") == ""


def test_a_docker_call_that_hangs_ends_the_swap_naming_it(containers, monkeypatch, tmp_path):
    """A hung engine (here a `docker` that never answers) stops the swap at the call's bound with an error naming
    the call, instead of holding the deploy and its lock; the real timeout(1) of the host runs it."""
    import subprocess
    import time

    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(containers, "DOCKER_BOUND", 1)

    class Module:
        params = params(stop_timeout=1)
        check_mode = False

        def run_command(self, argv):
            done = subprocess.run(argv, capture_output=True, text=True)
            return done.returncode, done.stdout, done.stderr

    began = time.monotonic()
    with pytest.raises(containers.SwapError, match="docker image inspect did not answer within 1 s"):
        containers.Docker(Module(), Module.params)("image", "inspect", "x")
    with pytest.raises(containers.SwapError, match="docker stop --time did not answer within 2 s"):  # plus stop_timeout
        containers.Docker(Module(), Module.params)("stop", "--time", "1", "x")
    assert time.monotonic() - began < 10


def test_the_swap_reads_the_engine_through_its_api_as_docker_inspect_says(containers, drain_of, docker_client):
    """Docker's reads (module_utils/deploykit_containers.py) ask the Docker engine's API on its unix socket, not the
    CLI (no run_command at all): this machine's real engine, a real container of a test app and a real image."""
    import uuid

    app = f"apitest-{uuid.uuid4().hex[:8]}"
    base = docker_client.images.list("deploykit/debian")[0]  # bootstrap's base image of the lab hosts
    repository = f"deploykit/{app}"
    base.tag(repository, "1.0")
    base.tag(repository, "2.0")
    labels = {containers.LABEL_APP: app, containers.LABEL_SPEC: "abc", containers.LABEL_RELEASE: "1.0",
              containers.LABEL_PROTOCOL: "http", containers.LABEL_PORT: "8123"}
    docker_client.containers.create(base.id, ["true"], name=f"{app}-old", labels=labels, entrypoint=[])
    running = docker_client.containers.run(base.id, ["sleep", "60"], name=f"{app}-1.0-abc", labels=labels,
                                           entrypoint=[], detach=True, restart_policy={"Name": "unless-stopped"},
                                           stop_signal="SIGINT")

    class Module:
        params = params(app=app, image=f"{repository}:1.0")
        check_mode = False

        def run_command(self, argv):
            assert argv[argv.index("docker") + 1] in ("update", "rmi"), f"a read went through the CLI: {argv}"
            changes.append(argv[argv.index("docker") + 1:])
            done = subprocess.run(argv, capture_output=True, text=True)  # a change: the CLI's
            return done.returncode, done.stdout, done.stderr

    import subprocess

    changes = []
    try:
        docker = containers.Docker(Module(), Module.params)
        found = docker.app_containers()
        assert [c.name for c in found] == [f"{app}-old", f"{app}-1.0-abc"]  # oldest first
        assert found[1] == containers.Container(f"{app}-1.0-abc", True, "abc", "1.0", "http", 8123, "unless-stopped",
                                                found[1].labels)
        assert (found[0].running, found[0].restart) == (False, "no")
        assert docker.state(f"{app}-1.0-abc") == (True, "0") and docker.running(f"{app}-1.0-abc")
        assert docker.state(f"{app}-none") == (False, "") and docker.inspect(f"{app}-none") is None
        assert docker.container_ids() == [running.id] == docker.container_ids([f"{app}-1.0-abc", f"{app}-none"])
        assert app in docker.apps()
        assert docker.image_id() == base.id
        held = drain_of(docker).hold({f"{app}-1.0-abc": "unless-stopped"}, 8123)
        fd, signal_name, container_id, _ = held[f"{app}-1.0-abc"]
        assert (signal_name, container_id) == ("SIGINT", running.id) and fd is not None
        os.close(fd)
        assert changes == [["update", "--restart", "no", f"{app}-1.0-abc"]]
        assert docker.state(f"{app}-1.0-abc") == (True, "0")
        assert docker.prune_images({f"{repository}:2.0"}) == [f"{repository}:1.0"]
        tags = [t for i in docker_client.images.list(repository) for t in i.tags if t.startswith(repository)]
        assert tags == [f"{repository}:2.0"]
        assert docker_client.images.get(base.id).tags  # its other names stay
        with pytest.raises(containers.SwapError, match=f"image {repository}:3.0 is not on this host"):
            containers.Docker(Module(), params(app=app, image=f"{repository}:3.0")).image_id()
    finally:
        for name in (f"{app}-old", f"{app}-1.0-abc"):
            docker_client.containers.get(name).remove(force=True)
        for tag in ("1.0", "2.0"):
            if docker_client.images.list(f"{repository}:{tag}"):
                docker_client.images.remove(f"{repository}:{tag}")


@pytest.fixture
def drain_of(swapper, tmp_path):
    """The Drain of a swap whose Docker is `docker` (set_restart through its module's run_command)."""
    def make(docker):
        swap = swapper.Swapper(type("Module", (), dict(params=dict(docker.params, drain_guard=False,
                                                                   progress_file=str(tmp_path / "p")),
                                                       check_mode=False, run_command=lambda self, argv: (0, "", "")))())
        swap.drain.docker = docker
        return swap.drain
    return make


def test_an_engine_that_does_not_answer_or_cannot_be_asked_ends_the_swap_naming_it(containers, monkeypatch, tmp_path):
    """A hung engine (here a unix socket that accepts and never answers) stops an API read at its bound, with an
    error naming the call; an engine that is not there, or a DOCKER_HOST that is not a unix socket, is named too."""
    import socket
    import time

    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(tmp_path / "docker.sock"))
    silent.listen(4)
    monkeypatch.setattr(containers, "DOCKER_BOUND", 1)
    docker = containers.Docker(type("Module", (), {})(), params())
    try:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
        began = time.monotonic()
        with pytest.raises(containers.SwapError, match="did not answer GET /containers/x/json within 1 s"):
            docker.state("x")
        assert time.monotonic() - began < 5
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
        with pytest.raises(containers.SwapError, match=f"engine at {tmp_path}/none.sock cannot be asked.*running"):
            docker.image_id()
        monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
        with pytest.raises(containers.SwapError, match="on its unix socket only"):
            docker.app_containers()
    finally:
        silent.close()


def test_a_streak_is_broken_by_failures_not_by_answers_of_another_server():
    """The loop of the swap's health gate and of deploykit_probe (until_streak): True counts, False starts the
    streak again, None (the old container answered) leaves it; it ends when before() or after() says so."""
    until_streak = module_utils("deploykit_probe").until_streak
    answers = iter([True, None, True, False, True, None, True, True])
    assert until_streak(lambda: next(answers), 3, 0) == (True, 8)
    tries = []
    assert until_streak(lambda: tries.append(1) or False, 1, 0, after=lambda: len(tries) < 4) == (False, 4)
    assert until_streak(lambda: True, 1, 0, before=lambda: False) == (False, 0)


def test_the_probe_module_reports_its_last_answer_and_why_it_failed():
    probe_module = load_module("deploykit_probe")
    outcomes = iter([(True, 200, "ok", ""), (False, 503, "down", "status 503, expected 200"),
                     (True, 200, "ok", ""), (True, 200, "ok", "")])
    waiter = probe_module.HealthWaiter(dict(successes=2, interval=0, timeout=60))
    waiter.attempt = lambda: next(outcomes)
    healthy, result = waiter.wait()
    assert healthy and list(result) == ["status", "body", "attempts", "elapsed"] and 0 <= result.pop("elapsed") < 1
    assert result == dict(status=200, body="ok", attempts=4)
    waiter = probe_module.HealthWaiter(dict(successes=2, interval=1, timeout=0.5))  # no time for a second one
    waiter.attempt = lambda: (False, None, "", "ConnectionRefusedError: refused")
    healthy, result = waiter.wait()
    assert not healthy and result["attempts"] == 1 and result["last_error"] == "ConnectionRefusedError: refused"
    assert list(result) == ["status", "body", "attempts", "elapsed", "last_error"] and result["status"] is None


def test_a_ports_listeners_are_read_from_ss_and_told_apart_by_container(monkeypatch):
    """module_utils/deploykit_host.py: who listens on a port, from `ss` (run through the module's run_command),
    each process placed in a container by its cgroup (here: pids 12 and 13 are in container c1)."""
    host = module_utils("deploykit_host")
    monkeypatch.setattr(host, "in_containers", lambda pid, ids: pid in ("12", "13") and "c1" in ids)
    out = ('LISTEN 0 4096 127.0.0.1:8000 0.0.0.0:* users:(("uwsgi",pid=12,fd=3),("uwsgi",pid=13,fd=3)) uid:10001\n'
           'LISTEN 0 4096 [::1]:8000 [::]:* users:(("python3",pid=20,fd=5))\n')
    calls = []

    def ss(argv):
        calls.append(argv)
        return 0, out, ""

    def no_ss(argv):
        return 1, "", "ss: not found"

    assert host.listeners(ss, 8000) == [("127.0.0.1", 10001, ["12", "13"]), ("::1", 0, ["20"])]
    assert calls == [["ss", "-Hltnep", "sport = :8000"]]
    assert host.listeners(no_ss, 8000) is None
    asked = []
    assert host.foreign_listeners(ss, 8000, lambda: asked.append("ids") or ["c1"]) == ["python3 (pid 20)"]
    assert host.foreign_listeners(no_ss, 8000, lambda: asked.append("ids") or []) == []
    assert asked == ["ids"]  # without ss the containers are not asked for (no docker call)
    assert host.listens(ss, 8000, lambda: ["c1"]) is True
    assert host.listens(ss, 8000, lambda: ["c2"]) is False
    assert host.listens(no_ss, 8000, lambda: ["c1"]) is None
    assert host.wait_listening(ss, ["c1"], 8000, 1) is True
    assert host.wait_listening(ss, ["c2"], 8000, 0.2) is False


def _hold(path: str, seconds: float, ready) -> None:
    host = module_utils("deploykit_host")
    with host.exclusive(path, 5):
        ready.set()
        time.sleep(seconds)


def test_one_swap_at_a_time_per_app_on_a_host_the_next_waits_or_names_the_holder(tmp_path):
    """A deploy stopped mid-swap leaves its swap module running on the host: the next swap waits for it (found on
    the lab: the next deploy's swap inspected a container the first one was removing)."""
    import multiprocessing

    host = module_utils("deploykit_host")
    path = str(tmp_path / "run" / "app.swap.lock")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold, args=(path, 1.5, ready))
    holder.start()
    assert ready.wait(10)
    busy = rf"another process \(pid {holder.pid}\) held .*app.swap.lock for 0 s"
    with pytest.raises(host.HostBusy, match=busy), host.exclusive(path, 0.3):
        pass
    with host.exclusive(path, 10) as waited:
        assert 0.5 < waited < 10
    holder.join(10)
    with host.exclusive(path, 1) as waited:  # free: at once
        assert waited < 0.2
