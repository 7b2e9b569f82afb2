"""Readying a host for a release in one call (module_utils/deploykit_stage.py, library/deploykit_stage.py), run as
Ansible runs it, against this machine's own Docker engine and files of the test's own. On a lab fleet: every deploy
(the app role's image tasks) and molecule's app scenario."""

from __future__ import annotations

import json
import os
import stat

import pytest

from conftest import module_utils
from conftest import run_module as run_conftest_module

stage = module_utils("deploykit_stage")  # as the module imports it on a host


def run_module(args: dict, check_mode: bool = False) -> dict:
    return run_conftest_module("deploykit_stage", args, ("deploykit_host", "deploykit_stage", "deploykit_static"),
                               check_mode)


@pytest.fixture(scope="module")
def an_image(docker_client) -> tuple[str, str]:
    """An image this machine's engine has (bootstrap built the lab host's): its name and id."""
    image = next(i for i in docker_client.images.list() if i.tags)
    return image.tags[0], image.id


def mode_of(path) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_the_image_is_found_and_another_build_of_it_must_be_shipped(an_image, tmp_path):
    name, image_id = an_image
    common = {"env_file": str(tmp_path / "etc" / "app.env")}
    same = run_module({**common, "image": name, "image_id": image_id})
    assert (same["image_present"], same["image_missing"], same["image_found_id"]) == (True, False, image_id)
    assert run_module({**common, "image": name})["image_missing"] is False  # no build named: any image will do
    other = run_module({**common, "image": name, "image_id": "sha256:" + "0" * 64})
    assert (other["image_present"], other["image_missing"]) == (True, True)
    absent = run_module({**common, "image": "deploykit/never-built:0.0.0"})
    assert (absent["image_present"], absent["image_missing"], absent["image_found_id"]) == (False, True, "")


@pytest.mark.skipif(os.geteuid() != 0, reason="the secrets file is root's: the test runs as root (as CI does)")
def test_the_secrets_file_is_roots_0600_in_a_0700_folder_written_once_and_mended(an_image, tmp_path):
    os.umask(0o022)
    env_file = tmp_path / "etc" / "deploykit" / "app.env"
    args = {"image": an_image[0], "env_file": str(env_file), "env_content": "SECRET=s3cr3t\n"}
    would = run_module(args, check_mode=True)
    assert would["changed"] and would["changes"] == ["env_file"] and not env_file.parent.exists()
    first = run_module(args)
    assert first["changed"] and env_file.read_text() == "SECRET=s3cr3t\n"
    assert "s3cr3t" not in json.dumps(first)  # never in the result (no_log)
    assert mode_of(env_file) == (0, 0, 0o600) and mode_of(env_file.parent) == (0, 0, 0o700)
    assert mode_of(tmp_path / "etc") == (0, 0, 0o755)  # only the file's own folder is private
    assert run_module(args)["changed"] is False
    os.chmod(env_file, 0o644)
    assert run_module(args)["changes"] == ["env_file"] and mode_of(env_file)[2] == 0o600
    assert run_module({**args, "env_content": "SECRET=other\n"})["changed"]
    assert env_file.read_text() == "SECRET=other\n"
    assert sorted(os.listdir(env_file.parent)) == ["app.env"]  # nothing left half-written


@pytest.mark.skipif(os.geteuid() != 0, reason="the data folder is given to the container's user: needs root")
def test_the_data_folder_belongs_to_the_containers_user_and_a_bad_owner_is_refused(an_image, tmp_path):
    args = {"image": an_image[0], "env_file": str(tmp_path / "app.env"), "data_dir": str(tmp_path / "data" / "app"),
            "data_owner": "10001:10001"}
    assert run_module(args)["changes"] == ["env_file", "data_dir"]
    assert mode_of(tmp_path / "data" / "app") == (10001, 10001, 0o750)
    assert run_module(args)["changed"] is False
    os.chown(tmp_path / "data" / "app", 0, 0)
    assert run_module(args)["changes"] == ["data_dir"]
    refused = run_module({**args, "data_owner": "no-such-user-here"})
    assert refused["failed"] and refused["msg"].startswith("data_owner 'no-such-user-here' is not a user")
    assert "octal mode" in run_module({**args, "data_mode": "rwx"})["msg"]


def test_owners_are_read_as_docker_reads_user():
    assert stage.owner_ids("10001:10002") == (10001, 10002)
    assert stage.owner_ids("10001") == (10001, 10001)
    assert stage.owner_ids("root") == (0, 0)
    assert stage.owner_ids("root:0") == (0, 0)


@pytest.fixture(scope="module")
def static_images(docker_client, tmp_path_factory):
    """Three releases of an app image with static files, as deploykit's build leaves them (their place in
    /opt/deploykit/static.json), one without, one whose static.json is empty and one whose is not an object:
    {release: (name, id)}. From scratch: an image of this machine's could be an app's, static.json and all."""
    built: dict[str, tuple[str, str]] = {}
    place = json.dumps({"url": "/static/", "root": "/srv/app/collected"})
    for release, files, info in (("1.0", {"css/site.css": "h1 { color: teal; }"}, place),
                                 ("2.0", {"css/site.css": "h1 {}"}, place), ("3.0", {"js/app.js": "1;"}, place),
                                 ("bare", {}, None), ("empty", {}, ""), ("list", {}, "[]")):
        context = tmp_path_factory.mktemp(f"static-{release}")
        lines = ["FROM scratch", "COPY Dockerfile /README"]
        for path, text in files.items():
            (context / "static" / path).parent.mkdir(parents=True, exist_ok=True)
            (context / "static" / path).write_text(text)
            os.chmod(context / "static" / path, 0o600)  # not readable by nginx as built
        if files:
            lines.append("COPY static /srv/app/collected")
        if info is not None:
            (context / "static.json").write_text(info)
            lines.append("COPY static.json /opt/deploykit/static.json")
        lines.append(f"LABEL io.deploykit.test=static-{release}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        image, _ = docker_client.images.build(path=str(context), tag=f"deploykit/static-test:{release}", rm=True)
        built[release] = (f"deploykit/static-test:{release}", image.id)
    yield built
    for name, _ in built.values():
        docker_client.images.remove(name, force=True)


def test_static_files_are_copied_out_of_the_image_once_and_current_and_previous_follow_the_releases(
        static_images, docker_client, tmp_path):
    root = tmp_path / "static" / "app"

    def stage_release(release: str, keep: int = 3, check_mode: bool = False) -> dict:
        name, image_id = static_images[release]
        return run_module({"image": name, "image_id": image_id, "static_dir": str(root), "release": release,
                           "keep_releases": keep}, check_mode)

    def folder(release: str) -> str:
        return f"releases/{release}-{static_images[release][1].removeprefix('sha256:')[:12]}"

    would = stage_release("1.0", check_mode=True)  # the image is read: its URL is known
    assert (would["changes"], would["static_url"], would["static_staged"]) == (["static_files"], "/static/", True)
    assert not root.exists()
    first = stage_release("1.0")
    assert (first["changes"], first["static_url"], first["static_staged"]) == (["static_files"], "/static/", True)
    assert os.readlink(root / "current") == folder("1.0") and not (root / "previous").exists()
    copied = root / "current" / "static" / "css" / "site.css"
    assert copied.read_text() == "h1 { color: teal; }" and stat.S_IMODE(os.stat(copied).st_mode) & 0o444 == 0o444
    assert stat.S_IMODE(os.stat(copied.parent).st_mode) & 0o555 == 0o555  # nginx goes through the folders
    again = stage_release("1.0")
    assert (again["changed"], again["static_url"]) == (False, "/static/")

    assert stage_release("2.0")["changes"] == ["static_files"]
    assert (os.readlink(root / "current"), os.readlink(root / "previous")) == (folder("2.0"), folder("1.0"))
    back = stage_release("1.0")  # a rollback: its copy is there, only the links move
    assert back["changes"] == ["static_files"] and back["static_url"] == "/static/"
    assert (os.readlink(root / "current"), os.readlink(root / "previous")) == (folder("1.0"), folder("2.0"))

    stage_release("3.0", keep=1)  # the oldest copy goes; what previous points at stays
    assert sorted(os.listdir(root / "releases")) == sorted(f.split("/")[1] for f in (folder("3.0"), folder("1.0")))
    assert (root / "current" / "static" / "js" / "app.js").read_text() == "1;"
    assert not list((root / "releases").glob(".*"))  # no copy left half-made

    for none in ("bare", "empty"):  # no static.json, or an empty one: no static files
        bare = stage_release(none)
        assert (bare["changed"], bare["static_url"], bare["static_staged"]) == (False, "", True)
    assert os.readlink(root / "current") == folder("3.0")
    odd = stage_release("list")
    assert odd["failed"] and "static.json in deploykit/static-test:list is not a JSON object" in odd["msg"]
    assert not docker_client.containers.list(all=True, filters={"label": "io.deploykit.static-copy"})


def test_older_copies_the_newest_first_and_a_copy_made_before_its_url_was_kept_are_kept(static_images, tmp_path):
    """Pruning keeps the newest copies (by time, not name) and what current and previous point at; a copy of
    this build without the .url file (older deploykit) keeps its files and gets one, rather than a failed copy."""
    name, image_id = static_images["1.0"]
    root, releases = tmp_path / "static", tmp_path / "static" / "releases"
    own = releases / f"1.0-{image_id.removeprefix('sha256:')[:12]}"
    (own / "static").mkdir(parents=True)
    (own / "static" / "kept.css").write_text("old copy")
    for age, entry in enumerate(("stray-file", "old-a", "old-b", "old-c")):
        path = releases / entry
        path.write_text("x") if entry == "stray-file" else path.mkdir()
        os.utime(path, (100 + age, 100 + age))
    os.utime(own, (50, 50))
    os.symlink("releases/old-a", root / "current")
    staged = run_module({"image": name, "image_id": image_id, "static_dir": str(root), "release": "1.0",
                         "keep_releases": 2})
    assert (staged["changes"], staged["static_url"]) == (["static_files"], "/static/")
    assert (own / ".url").read_text() == "/static/\n" and sorted(os.listdir(own / "static")) == ["kept.css"]
    assert (os.readlink(root / "current"), os.readlink(root / "previous")) == (f"releases/{own.name}", "releases/old-a")
    # the two newest (old-c, and own: .url just written) and previous (old-a) stay
    assert sorted(os.listdir(releases)) == sorted([own.name, "old-a", "old-c"])


def test_static_files_wait_for_an_image_the_host_lacks_and_need_their_release(static_images, tmp_path):
    name, _ = static_images["1.0"]
    other_build = run_module({"image": name, "image_id": "sha256:" + "0" * 64, "static_dir": str(tmp_path / "s"),
                              "release": "1.0"})
    assert (other_build["image_missing"], other_build["static_staged"], other_build["changed"]) == (True, False, False)
    assert not (tmp_path / "s").exists()
    after_ship = run_module({"image": name, "image_id": "sha256:" + "0" * 64, "static_dir": str(tmp_path / "s"),
                             "release": "1.0", "require_image": True})
    assert after_ship["failed"] and after_ship["msg"].startswith(f"{name} on this host is image sha256:")
    assert after_ship["msg"].endswith(f"not sha256:{'0' * 64}: ship it first (the app role's image tasks)")
    absent = run_module({"image": "deploykit/never-built:0.0.0", "require_image": True})
    assert absent["msg"] == ("the image deploykit/never-built:0.0.0 is not on this host: ship it first "
                             "(the app role's image tasks)")
    unnamed = run_module({"image": name, "static_dir": str(tmp_path / "s")})
    assert unnamed["failed"] and unnamed["msg"] == "static_dir needs the release it is for (release)"
