"""deploykit.yml: `deploy init` writes it from a real generated project, the loader refuses bad input naming the
key and its line, init never overwrites a user's edits silently, the docs list every key; hooks and secrets."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FLASK_DIR, ROOT
from deploy_tool import appspec
from deploy_tool.errors import DeployError
from deploy_tool.hooks import run_hook
from deploy_tool.initapp import init
from deploy_tool.secrets import check_secrets

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def django_site(tmp_path: Path) -> Path:
    site = tmp_path / "mysite"
    site.mkdir()
    subprocess.run([str(VENV_BIN / "django-admin"), "startproject", "mysite", "."], cwd=site, check=True)
    (site / "requirements.txt").write_text("Django==5.2.19\n")
    return site


def test_init_writes_every_key_and_the_file_loads_back_as_written(django_site):
    result = init(django_site)
    assert result.outcome == "written"
    text = result.path.read_text()
    for key in appspec.SCHEMA:  # every key is in the file, with its comment
        assert re.search(rf"^  # {re.escape(key.help[:30])}", text, re.MULTILINE), key.name
        assert re.search(rf"^  {key.name}: ", text, re.MULTILINE), key.name
    spec = appspec.load(django_site)
    assert spec["app.wsgi"] == "mysite.wsgi:application"
    assert spec["app.django_settings"] == "mysite.settings"
    assert spec["build.requirements"] == "requirements.txt"
    assert spec["build.python"] == "3.13"
    assert spec["runtime.release_command"] == "python manage.py migrate --noinput"
    assert spec["server.names"] == ["mysite.lab", "localhost", "127.0.0.1"]


def test_init_again_leaves_the_file_or_refuses_to_overwrite_edits(django_site):
    init(django_site)
    assert init(django_site).outcome == "unchanged"
    path = django_site / "deploykit.yml"
    edited = path.read_text().replace("processes: 4", "processes: 8")
    path.write_text(edited)
    with pytest.raises(DeployError, match="exists and differs"):
        init(django_site)
    assert path.read_text() == edited  # untouched
    assert init(django_site, force=True).outcome == "replaced"
    assert (django_site / "deploykit.yml.bak").read_text() == edited


def test_init_refuses_a_python_no_base_offers(django_site):
    with pytest.raises(DeployError, match="no base image offers Python 3.9"):
        init(django_site, python="3.9")


@pytest.mark.parametrize("change, message", [
    (("  variant:", "  varient:"),
     r"line \d+: unknown key 'varient' in section 'server'\n  hint: did you mean 'variant'"),
    (("server:", "sever:"), r"line \d+: unknown section 'sever'"),
    (("processes: 4", "processes: four"), r"line \d+: server.processes must be a whole number, not 'four'"),
    (("processes: 4", "processes: true"), r"server.processes must be a whole number"),
    (("collectstatic: true", "collectstatic: 1"), r"build.collectstatic must be true or false"),
    (("python: '3.13'", "python: '3.9'"), r"build.python must be one of 3.13, 3.11, not '3.9'"),
    (("health_path: /", "health_path: /x y"), r"server.health_path '/x y' must be a path"),
    (("processes: 4", "processes: 0"), r"server.processes must be 1-64, not 0"),
    (("warmup: []", "warmup: [/, /a b]"), r"server.warmup must list at most 20 paths"),
    (("warmup: []", "warmup: ['/a,/b']"), r"server.warmup must list at most 20 paths .* no spaces or commas"),
    (("name: mysite", "name: My Site"), r"app.name 'My Site' must be lowercase"),
    (("wsgi: 'mysite.wsgi:application'", "wsgi: mysite.wsgi"), r"app.wsgi 'mysite.wsgi' must be module:attribute"),
    (("  env: {}\n  # Django", "  env: {1: x}\n  # Django"), r"build.env: 1 must be an environment variable name"),
    (("requirements: requirements.txt", "requirements: reqs.txt"), r"build.requirements names reqs.txt"),
])
def test_bad_keys_and_values_are_named_with_their_line(django_site, change, message):
    init(django_site)
    path = django_site / "deploykit.yml"
    old, new = change
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(DeployError, match=message):
        appspec.load(django_site)


def test_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(DeployError, match="no deploykit.yml in .*\n  hint: run `deploy init`"):
        appspec.load(tmp_path)


def test_the_app_is_the_one_in_project_dir_else_in_the_working_directory(tmp_path, monkeypatch):
    """--project DIR, else this directory: a command that needs an app refuses a directory without one; one that
    may do without (deploy bench) takes none."""
    monkeypatch.chdir(tmp_path)
    assert appspec.load_optional(None) is None
    with pytest.raises(DeployError, match=f"no deploykit.yml in {tmp_path}"):
        appspec.load_given(None)
    with pytest.raises(DeployError, match="no deploykit.yml in"):
        appspec.load_optional(str(tmp_path / "elsewhere"))  # a directory given must have one
    assert appspec.load_given(str(FLASK_DIR)).name == appspec.load_optional(str(FLASK_DIR)).name == "flask-demo"
    monkeypatch.chdir(FLASK_DIR)
    assert appspec.load_optional(None).directory == FLASK_DIR.resolve()


def test_the_reference_lists_every_key_with_its_default():
    reference = (ROOT / "docs" / "deploykit-yml.md").read_text()
    for key in appspec.SCHEMA:
        assert f"`{key.section}.{key.name}`" in reference, key.name


def test_a_failing_hook_stops_with_its_output_and_a_passing_one_sees_what_happens(django_site):
    init(django_site)
    path = django_site / "deploykit.yml"
    path.write_text(path.read_text().replace("before_build: ''", "before_build: 'echo built $DEPLOYKIT_VERSION > "
                                                                 "hook.out'")
                    .replace("before_swap: ''", "before_swap: 'echo no database today; exit 3'"))
    spec = appspec.load(django_site)
    run_hook(spec, "before_build", version="1.2.3")
    assert (django_site / "hook.out").read_text() == "built 1.2.3\n"
    with pytest.raises(DeployError, match="hook before_swap failed \\(exit 3\\).*\nno database today"):
        run_hook(spec, "before_swap", version="1.2.3")
    run_hook(spec, "after_deploy")  # unset: nothing runs


def vault(tmp_path: Path, content: str) -> tuple[Path, Path]:
    password = tmp_path / "password"
    password.write_text("pw\n")
    plain = tmp_path / "plain.yml"
    plain.write_text(content)
    secrets = tmp_path / "secrets.yml"
    subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password),
                    "--output", str(secrets), str(plain)], check=True, capture_output=True,
                   env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")})
    return secrets, password


def test_secrets_are_checked_decrypted_in_memory(tmp_path):
    secrets, password = vault(tmp_path, "app_secrets: {DJANGO_SECRET_KEY: abc, API_TOKEN: 42}\n")
    assert check_secrets(secrets, password) == {"DJANGO_SECRET_KEY": "abc", "API_TOKEN": "42"}
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    with pytest.raises(DeployError, match="cannot be decrypted"):
        check_secrets(secrets, wrong)
    bad, password = vault(tmp_path, "DJANGO_SECRET_KEY: abc\n")
    with pytest.raises(DeployError, match="must hold one mapping, app_secrets"):
        check_secrets(bad, password)
    bad, password = vault(tmp_path, "app_secrets: {'BAD NAME': x}\n")
    with pytest.raises(DeployError, match="'BAD NAME' is not an environment variable name"):
        check_secrets(bad, password)


def test_the_build_context_holds_the_app_less_what_is_excluded(django_site, tmp_path):
    from deploy_tool.appbuild import app_requirements, copy_app, pip_download_command

    init(django_site)
    for junk in (".git/config", "__pycache__/x.pyc", "secrets.yml", "mysite/cached.pyc"):
        (django_site / junk).parent.mkdir(parents=True, exist_ok=True)
        (django_site / junk).write_text("junk")
    spec = appspec.load(django_site)
    copy_app(spec, tmp_path / "app")
    copied = sorted(p.relative_to(tmp_path / "app").as_posix() for p in (tmp_path / "app").rglob("*") if p.is_file())
    assert "manage.py" in copied and "mysite/settings.py" in copied and "requirements.txt" in copied
    never = ("secrets.yml", "deploykit.yml")
    assert not [p for p in copied if p.startswith(".git") or p.endswith(".pyc") or p in never]
    assert app_requirements(spec) == "Django==5.2.19\n"
    argv = pip_download_command("3.13", tmp_path / "wheels", [tmp_path / "r.txt"])
    assert argv[argv.index("--python-version") + 1] == "3.13" and argv[argv.index("--abi") + 1] == "cp313"
    assert "--only-binary=:all:" in argv and argv[-2:] == ["-r", str(tmp_path / "r.txt")]
    # Debian 13's glibc 2.41 takes every manylinux wheel down to manylinux1; pip infers none of them by itself
    tags = [argv[i + 1] for i, word in enumerate(argv) if word == "--platform"]
    machine = platform.machine()
    assert tags[0] == f"manylinux_2_41_{machine}" and f"manylinux_2_28_{machine}" in tags
    assert tags[-1] == f"manylinux1_{machine}"


def test_pyproject_dependencies_are_the_requirements(tmp_path):
    from deploy_tool.appbuild import app_requirements

    (tmp_path / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\ndependencies = ["Flask==3.1.3", '
                                             '"requests>=2"]\n')
    init(tmp_path)
    assert app_requirements(appspec.load(tmp_path)) == "Flask==3.1.3\nrequests>=2\n"


def test_a_deploy_of_an_app_is_refused_before_any_host_with_what_it_lacks(django_site, tmp_path):
    from deploy_tool.deploy import DeployRequest
    from deploy_tool.project import Project

    init(django_site)
    spec = appspec.load(django_site)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    with pytest.raises(DeployError, match="runs from a venv of its own.*build.eventlet: true") as refused:
        DeployRequest(inventory=inventory, version="1.0.0", variant="gunicorn-eventlet", spec=spec).validate(
            Project(ROOT))
    assert "build the release again" in (refused.value.hint or "")
    path = django_site / "deploykit.yml"  # an image with the venv: accepted
    path.write_text(path.read_text().replace("eventlet: false", "eventlet: true"))
    DeployRequest(inventory=inventory, version="1.0.0", variant="gunicorn-eventlet",
                  spec=appspec.load(django_site)).validate(Project(ROOT))
    secrets, _ = vault(tmp_path, "app_secrets: {A: b}\n")
    secrets.rename(django_site / "secrets.yml")
    with pytest.raises(DeployError, match="its vault password is needed"):
        DeployRequest(inventory=inventory, version="1.0.0", variant="uwsgi", spec=spec).validate(Project(ROOT))


def test_requirements_that_cannot_be_resolved_fail_the_build_naming_them(django_site, tmp_path):
    """Before any image is built: pip's own words, for the base's Python."""
    from deploy_tool.appbuild import AppBuilder
    from deploy_tool.project import Project
    from deploy_tool.variants import VARIANTS_FILE

    (django_site / "requirements.txt").write_text("Django==5.2.19\nno-such-package-deploykit-test==1.0\n")
    init(django_site)
    project = Project(tmp_path / "tool")
    (project.root / "apps" / "requirements").mkdir(parents=True)
    for name in ("apps/requirements/servers.txt", "apps/launcher", str(VARIANTS_FILE), "apps/app.Dockerfile"):
        source, target = ROOT / name, project.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
    builder = AppBuilder(project, client=None, spec=appspec.load(django_site))  # no Docker engine is asked
    (tmp_path / "context").mkdir()
    with pytest.raises(DeployError, match="(?s)cannot be resolved for Python 3.13:.*no-such-package-deploykit-test"):
        builder.assemble(tmp_path / "context")


def test_build_env_pairs_are_checked_and_baked_as_written():
    from deploy_tool.appbuild import env_lines, parse_env

    assert parse_env(["APP_FAULT=unhealthy", "EMPTY=", "A=b=c"]) == {"APP_FAULT": "unhealthy", "EMPTY": "", "A": "b=c"}
    for bad in ("NOEQUALS", "1X=2", "A-B=1", "=x"):
        with pytest.raises(DeployError, match="must be NAME=VALUE"):
            parse_env([bad])
    for own in ("PATH=/tmp", "DEPLOYKIT_WSGI=x:y", "PYTHONPATH=/x", "DJANGO_SETTINGS_MODULE=a.b"):
        with pytest.raises(DeployError, match="the image sets it itself"):
            parse_env([own])
    with pytest.raises(DeployError, match="one line"):
        parse_env(["A=x\ny"])
    assert env_lines({"A": 'two $HOME "q" \\n'}) == 'ENV A="two \\$HOME \\"q\\" \\\\n"\n'
