"""An app's nginx file in one call (module_utils/deploykit_nginx.py, library/deploykit_nginx_app.py), run as Ansible
runs it, on files of the test's own. The check command here is a shell line standing where `nginx -t` stands (this
machine has no nginx); a lab host's real nginx refusing a file: tests/test_lab_fleet.py."""

from __future__ import annotations

import os
import stat

from conftest import run_module as run_conftest_module

REFUSE = ["sh", "-c", "echo 'nginx: [emerg] unknown directive \"bogus\" in app.conf:1' >&2; exit 1"]
ACCEPT = ["true"]


def run_module(args: dict, check_mode: bool = False) -> dict:
    return run_conftest_module("deploykit_nginx_app", args, ("deploykit_host", "deploykit_nginx"), check_mode)


def mode_of(path) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_a_new_file_is_written_checked_and_then_left_alone(tmp_path):
    path = tmp_path / "app.conf"
    made = run_module({"path": str(path), "content": "server { listen 80; }\n", "check_command": ACCEPT})
    assert (made["changed"], made["checked"]) == (True, True), made
    assert path.read_text() == "server { listen 80; }\n"
    assert mode_of(path) == (0, 0, 0o644)
    # the same text again: nothing written, and not checked (a check that would refuse it is not run)
    again = run_module({"path": str(path), "content": "server { listen 80; }\n", "check_command": REFUSE})
    assert (again["changed"], again["checked"], again.get("failed", False)) == (False, False, False), again
    assert list(tmp_path.iterdir()) == [path]  # no backup or partial file left beside it


def test_a_refused_file_is_put_back_as_it_was_with_nginx_words(tmp_path):
    path = tmp_path / "app.conf"
    path.write_text("server { listen 80; }\n")
    os.chmod(path, 0o644)
    refused = run_module({"path": str(path), "content": "server { bogus on; }\n", "check_command": REFUSE})
    assert refused["failed"] and not refused["changed"], refused
    assert 'unknown directive "bogus"' in refused["msg"] and "previous file is back" in refused["msg"]
    assert path.read_text() == "server { listen 80; }\n"
    assert list(tmp_path.iterdir()) == [path]


def test_a_refused_file_comes_back_with_its_own_mode(tmp_path):
    path = tmp_path / "app.conf"
    path.write_text("server { listen 80; }\n")
    os.chmod(path, 0o640)
    refused = run_module({"path": str(path), "content": "server { bogus on; }\n", "mode": "0644",
                          "check_command": REFUSE})
    assert refused["failed"], refused
    assert path.read_text() == "server { listen 80; }\n"
    assert mode_of(path) == (0, 0, 0o640)


def test_a_refused_first_file_is_removed(tmp_path):
    path = tmp_path / "app.conf"
    refused = run_module({"path": str(path), "content": "server { bogus on; }\n", "check_command": REFUSE})
    assert refused["failed"] and "there was none" in refused["msg"], refused
    assert not path.exists()


def test_a_mode_change_alone_is_made_without_a_check(tmp_path):
    path = tmp_path / "app.conf"
    path.write_text("server { listen 80; }\n")
    os.chmod(path, 0o600)
    changed = run_module({"path": str(path), "content": "server { listen 80; }\n", "check_command": REFUSE})
    assert (changed["changed"], changed["checked"]) == (True, False), changed
    assert mode_of(path) == (0, 0, 0o644)


def test_check_mode_shows_the_change_and_writes_nothing(tmp_path):
    path = tmp_path / "app.conf"
    path.write_text("upstream a { server 127.0.0.1:8000; }\n")
    shown = run_module({"path": str(path), "content": "upstream a { server 127.0.0.1:8001; }\n",
                        "check_command": REFUSE, "_ansible_diff": True}, check_mode=True)
    assert (shown["changed"], shown["checked"]) == (True, False), shown
    assert shown["diff"]["before"] == "upstream a { server 127.0.0.1:8000; }\n"
    assert shown["diff"]["after"] == "upstream a { server 127.0.0.1:8001; }\n"
    assert path.read_text() == "upstream a { server 127.0.0.1:8000; }\n"


def test_a_missing_folder_is_refused_with_a_hint(tmp_path):
    refused = run_module({"path": str(tmp_path / "nowhere" / "app.conf"), "content": "x", "check_command": ACCEPT})
    assert refused["failed"] and "is nginx provisioned" in refused["msg"], refused
    assert not (tmp_path / "nowhere").exists()


def test_a_changed_file_is_reloaded_with_once_checked_and_put_back_when_the_reload_fails(tmp_path):
    path, reloads = tmp_path / "app.conf", tmp_path / "reloads"
    reload_command = ["sh", "-c", f"echo reloaded >> {reloads}"]
    made = run_module({"path": str(path), "content": "server { listen 80; }\n", "check_command": ACCEPT,
                       "reload_command": reload_command})
    assert (made["changed"], made["checked"], made["reloaded"]) == (True, True, True), made
    assert reloads.read_text() == "reloaded\n"
    # the same text: no reload
    again = run_module({"path": str(path), "content": "server { listen 80; }\n", "check_command": ACCEPT,
                        "reload_command": reload_command})
    assert (again["changed"], again["reloaded"]) == (False, False), again
    # refused by the check: not reloaded
    refused = run_module({"path": str(path), "content": "server { bogus on; }\n", "check_command": REFUSE,
                          "reload_command": reload_command})
    assert refused["failed"] and reloads.read_text() == "reloaded\n", refused
    # the reload fails: the previous file is back, so that a run again reloads again
    failing = ["sh", "-c", "echo 'nginx is not running' >&2; exit 1"]
    broken = run_module({"path": str(path), "content": "server { listen 81; }\n", "check_command": ACCEPT,
                         "reload_command": failing})
    assert broken["failed"] and "did not reload" in broken["msg"] and "nginx is not running" in broken["msg"], broken
    assert path.read_text() == "server { listen 80; }\n"
    # without a reload command (a provision): checked, not reloaded (the handler's)
    plain = run_module({"path": str(path), "content": "server { listen 82; }\n", "check_command": ACCEPT})
    assert (plain["changed"], plain["checked"], plain["reloaded"]) == (True, True, False), plain
