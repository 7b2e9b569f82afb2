"""The docker role leaves a configured engine that answers and runs containers."""

import json


def test_engine_package_installed(host):
    assert host.package("docker.io").is_installed


def test_engine_answers_with_configured_log_driver(host):
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LoggingDriver"] == "json-file"
    assert info["Driver"] == "overlay2"


def test_daemon_json_matches_defaults(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["log-opts"] == {"max-size": "10m", "max-file": "3"}


def test_engine_enabled_at_boot(host):
    assert host.file("/etc/rc2.d/S01docker").exists or host.service("docker").is_enabled


def test_engine_runs_a_container(host):
    # No registry here: an image of merged-/usr symlinks plus the host's /usr mounted read-only runs a binary.
    host.check_output(
        "d=$(mktemp -d) && ln -s usr/bin $d/bin && ln -s usr/lib $d/lib && ln -s usr/lib64 $d/lib64"
        " && tar -C $d -cf - . | docker import - deploykit/usr-only:test && rm -r $d")
    out = host.check_output("docker run --rm -v /usr:/usr:ro deploykit/usr-only:test /usr/bin/uname -n")
    assert out.strip()  # the container's own hostname, a 12-hex-digit id
    assert out.strip() != host.check_output("hostname").strip()


def test_users_can_reach_the_engine(host):
    assert "docker" in host.user("deploykit").groups
