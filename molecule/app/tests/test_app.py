"""The app container: the chosen server as PID 1, hardened, on the host network, healthy."""

import json
import os

RELEASE = os.environ.get("DEPLOYKIT_TEST_RELEASE", "0.0.0-ci")


def app_containers(host):
    return host.check_output(
        "docker ps --all --filter label=io.deploykit.app=deploykit-app --format '{{.Names}}'").split()


def inspect(host):
    (name,) = app_containers(host)
    return json.loads(host.check_output(f"docker inspect {name}"))[0]


def test_exactly_one_app_container_named_by_release(host):
    (name,) = app_containers(host)
    assert name.startswith(f"deploykit-app-{RELEASE}-")


def test_container_runs_the_release_on_the_host_network(host):
    info = inspect(host)
    assert info["State"]["Running"]
    assert info["Config"]["Image"] == f"deploykit/flask-demo:{RELEASE}"
    assert info["HostConfig"]["NetworkMode"] == "host"
    assert info["Config"]["Labels"]["io.deploykit.variant"] == "gunicorn-gthread"


def test_container_is_hardened(host):
    info = inspect(host)
    assert info["Config"]["User"] == "10001:10001"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in info["HostConfig"]["SecurityOpt"]
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert (info["HostConfig"]["Memory"], info["HostConfig"]["PidsLimit"]) == (1024 ** 3, 1024)  # the role's limits


def test_pid_1_is_the_server(host):
    # The container's PID 1 read from the host's /proc: a `docker exec` would start a process in the container
    # (runc may fail to, under load), and this reads what runs without adding to it.
    pid = inspect(host)["State"]["Pid"]
    cmdline = host.check_output(f"cat /proc/{pid}/cmdline").replace("\x00", " ")
    assert "gunicorn" in cmdline and "--worker-class gthread" in cmdline and "fd://3" in cmdline


def test_answers_health_with_its_release(host):
    body = json.loads(host.check_output("curl -sf http://127.0.0.1:8000/health"))
    assert body["release"] == RELEASE and body["variant"] == "gunicorn-gthread"
    assert body["instance"] == app_containers(host)[0]


def test_post_then_redirect(host):
    out = host.check_output("curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -d note=hi http://127.0.0.1:8000/")
    assert out == "303 http://127.0.0.1:8000/"


def test_secrets_file_is_private_and_not_in_the_image(host):
    env_file = host.file("/etc/deploykit/app.env")
    assert env_file.mode == 0o600 and env_file.user == "root"
    image_env = host.check_output(f"docker image inspect -f '{{{{json .Config.Env}}}}' deploykit/flask-demo:{RELEASE}")
    assert "SECRET_KEY" not in image_env


def test_no_archive_left_behind(host):
    assert not host.file(f"/var/tmp/flask-demo-{RELEASE}.tar").exists


def test_release_recorded_for_rollback(host):
    history = json.loads(host.file("/var/lib/deploykit/releases.json").content_string)
    assert history[-1]["release"] == RELEASE
