"""Bad input is refused with one clear error, before any host or engine is touched."""

from __future__ import annotations

import pytest

from conftest import FLASK_DIR, deploy
from deploy_tool.cli import build_parser, main
from deploy_tool.errors import DeployError, GateStopped

# An engine address that does not exist: a command that reached Docker would say so instead.
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_error_prints_message_and_hint():
    assert str(DeployError("it broke", hint="do this")) == "it broke\n  hint: do this"
    assert str(DeployError("it broke")) == "it broke"


def test_exit_3_is_defined_once_for_every_gate_that_stops():
    """A canary stopped by its gate and a regression found by --compare exit 3 as GateStopped; a deploy's failed
    gate (no canary) exits 2 as any other DeployError."""
    from deploy_tool.benchcompare import BenchRegressed
    from deploy_tool.canary import CanaryStopped
    from deploy_tool.flow import GateFailed

    assert GateStopped.exit_code == 3 and GateFailed.exit_code == DeployError.exit_code == 2
    for stopped in (BenchRegressed, CanaryStopped):
        assert issubclass(stopped, GateStopped) and "exit_code" not in vars(stopped)


@pytest.mark.parametrize("count", ["0", "41", "-1"])
def test_lab_up_refuses_bad_host_counts_before_docker(count):
    result = deploy("lab", "up", "--hosts", count, env=NO_ENGINE, check=False)
    assert result.returncode == 2
    assert "--hosts must be between 1 and 40" in result.stderr
    assert "no Docker engine" not in result.stderr


@pytest.mark.parametrize("fleet", ["Lab", "1lab", "lab_1", "x" * 40])
def test_lab_refuses_bad_fleet_names_before_docker(fleet):
    result = deploy("lab", "status", "--fleet", fleet, env=NO_ENGINE, check=False)
    assert result.returncode == 2
    assert "invalid lab fleet name" in result.stderr


def test_missing_engine_is_one_error_with_a_hint():
    result = deploy("lab", "status", env=NO_ENGINE, check=False)
    assert result.returncode == 2
    assert "no Docker engine answers" in result.stderr
    assert "hint: run ./scripts/bootstrap" in result.stderr
    assert "Traceback" not in result.stderr


def test_provision_refuses_a_missing_inventory(tmp_path):
    result = deploy("provision", "-i", str(tmp_path / "nowhere"), check=False)
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "deploy lab up" in result.stderr


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_an_inventory_named_like_a_command_is_still_a_deploy():
    from deploy_tool.cli import parse

    args = parse(["-i", "lab", "--version", "1.0.0"])
    assert (args.command, args.inventory, args.version) == ("deploy", "lab", "1.0.0")


def test_parser_defaults():
    args = build_parser().parse_args(["lab", "up"])
    assert (args.hosts, args.fleet) == (3, "lab")
    args = build_parser().parse_args(["provision"])
    assert (args.inventory, args.check, args.limit) == ("lab", False, None)


@pytest.mark.parametrize("text, message", [
    ("all:\n  children:\n    web:\n      hosts: [unclosed\n", "could not read"),
    ("all:\n  children:\n    db:\n      hosts:\n        db-1: {}\n", "has no hosts in the group web"),
])
def test_a_malformed_or_webless_inventory_is_refused_before_docker(tmp_path, text, message):
    (tmp_path / "hosts.yml").write_text(text)
    result = deploy("-i", str(tmp_path), "--version", "1.0.0", check=False, cwd=FLASK_DIR,
                    env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Docker" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--version", "1.0\n"], "invalid release version"),
    (["--version", "1.0.0", "--batch", "1\n"], "invalid batch"),
])
def test_a_value_with_a_trailing_line_break_is_refused(tmp_path, args, message):
    """`$` in a pattern matches before a final newline: values are matched whole."""
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts:\n        web-1: {}\n")
    result = deploy("-i", str(tmp_path), *args, check=False, cwd=FLASK_DIR, env=NO_ENGINE)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("path", ['/{{ lookup("pipe", "id") }}', "/ x", "health", "/a\nb"])
def test_a_benchmark_path_that_is_no_url_path_is_refused(tmp_path, path):
    """Ansible would render a path with braces as a template (a command on the controller); one with a space
    failed only after the swap."""
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts:\n        web-1: {}\n")
    smoke = deploy("-i", str(tmp_path), "--version", "1.0.0", "--smoke-path", path, check=False, cwd=FLASK_DIR,
                   env=NO_ENGINE)
    bench = deploy("bench", "-i", str(tmp_path), "--path", path, check=False, env=NO_ENGINE)
    for result in (smoke, bench):
        assert result.returncode == 2 and "must be a URL path" in result.stderr, result.stderr


def test_the_main_help_shows_the_deploy_itself_first():
    """A newcomer's first `deploy --help` names the main job and where its options are, before the commands."""
    text = build_parser().format_help()
    assert text.index("deploy [-i lab|production|PATH] --version V") < text.index("positional arguments")
    assert "deploy --version V --help" in text


@pytest.mark.parametrize("args, message", [
    (["--gate-threshold", "1001"], "--gate-threshold 1001.0 must be a percentage above 0 and at most 1000"),
    (["--smoke-connections", "5000"], "benchmark connections must be 1-4096, not 5000"),
    (["--smoke-duration", "0"], "benchmark duration must be 1-600 s, not 0"),
])
def test_an_out_of_range_option_is_named(tmp_path, args, message):
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts:\n        web-1: {}\n")
    result = deploy("-i", str(tmp_path), "--version", "1.0.0", *args, check=False, cwd=FLASK_DIR, env=NO_ENGINE)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("command, limit, message", [
    ((), "~[", "Ansible would read it as '~'"),  # an empty expression: it matched every host
    ((), "web-1,!~(x", "'~(x' is not a regular expression"),
    ((), "~.]", "Ansible would read it as '~.'"),  # the bracket dropped, '~.' matches every host
    ((), "~web]", "Ansible would read it as '~web'"),
    (("provision",), "web 1", "is not a host pattern"),
    (("bench",), "{{ x }}", "is not a host pattern"),
    (("rollback",), "", "is not a host pattern"),
])
def test_a_limit_that_is_no_host_pattern_is_refused_before_any_host(tmp_path, command, limit, message):
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts:\n        web-1: {}\n")
    version = ("--version", "1.0.0") if not command else ()
    result = deploy(*command, "-i", str(tmp_path), *version, "--limit", limit, check=False, cwd=FLASK_DIR,
                    env=NO_ENGINE)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_host_patterns_users_write_pass():
    from deploy_tool.inventory import check_limit

    for limit in ("web-1", "web-*", "web:&eu", "web,!web-3", "~web-[12]$", "lab-1:lab-2", "10.0.0.5", "~web[0:2]",
                  "~web(?:1|2),db"):
        check_limit(limit)


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_an_inventory_name_that_is_no_inventory_is_refused(name):
    result = deploy("-i", name, "--version", "1.0.0", check=False, cwd=FLASK_DIR, env=NO_ENGINE)
    assert result.returncode == 2 and "names no inventory" in result.stderr, result.stderr


def test_a_web_group_made_of_child_groups_is_the_deploys_target(tmp_path):
    from deploy_tool.inventory import web_addresses

    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    web:\n      children:\n        web_eu:\n          hosts:\n"
        "            eu-1: {ansible_host: 127.0.0.2}\n        web_us:\n          hosts:\n"
        "            us-1: {ansible_host: 127.0.0.3}\n            eu-1: {}\n")
    assert web_addresses(tmp_path) == {"eu-1": "127.0.0.2", "us-1": "127.0.0.3"}


@pytest.mark.parametrize("message, said", [(" ", "--message must say something"),
                                           ("x" * 2001, "--message must say something"),
                                           ("Back at {{ lookup('pipe', 'id') }}", "--message may not hold {{")])
def test_maintenance_refuses_an_empty_long_or_templated_message_before_any_host(message, said, tmp_path):
    result = deploy("maintenance", "on", "--message", message, "-i", str(tmp_path / "no-such-inventory"),
                    check=False)
    assert result.returncode == 2 and said in result.stderr
    assert "inventory" not in result.stderr  # refused before the inventory was even looked at
