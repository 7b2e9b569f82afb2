"""Apps this repository did not write, deployed the way their users would: from the app's own directory,
`deploy init`, `deploy secrets edit`, `deploy build`, `deploy`, a swap under load, `deploy rollback`.

- A Django project from `django-admin startproject` plus an app from `manage.py startapp`, with a model, its
  migration (`makemigrations`), a form and the admin's static files, on the provisioned PostgreSQL
  (DATABASE_URL read with dj-database-url), on Python 3.13 (the Debian 13 base, init's default).
- A Flask app with an app factory (the Flask tutorial's layout), its requirements in pyproject.toml, notes in
  SQLite in its persistent data directory, on Python 3.11 (the Debian 12 base).

Each is generated here from the pinned packages; the edits a user makes (secret key and database from the
environment, STATIC_ROOT, a health view) are made here as a user would make them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import NO_CHECKS, deploy
from weblab import Load, client, describe, dropped, request

pytestmark = pytest.mark.lab

VENV_BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"


def run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


def edit(path: Path, old: str, new: str, regex: bool = False) -> None:
    text = path.read_text()
    changed = re.sub(old, new, text, count=1, flags=re.DOTALL) if regex else text.replace(old, new, 1)
    assert changed != text, f"{path}: {old!r} not found"
    path.write_text(changed)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def django_project(root: Path) -> Path:
    """`django-admin startproject mysite`, `startapp polls`, and what a user adds to deploy it."""
    site = root / "mysite"
    site.mkdir()
    run(str(VENV_BIN / "django-admin"), "startproject", "mysite", ".", cwd=site)
    run(sys.executable, "manage.py", "startapp", "polls", cwd=site)
    settings = site / "mysite" / "settings.py"
    # startproject quotes with ' or, when black is on PATH (Django formats what it generates), with "
    edit(settings, r"""SECRET_KEY = (['"]).*?\1\n""", 'SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]\n', regex=True)
    edit(settings, "DEBUG = True", 'DEBUG = os.environ.get("DJANGO_DEBUG") == "1"')
    edit(settings, "ALLOWED_HOSTS = []",
         'ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")')
    edit(settings, r"DATABASES = \{.*?\n\}\n", 'DATABASES = {"default": dj_database_url.config(conn_max_age=60)}\n',
         regex=True)
    edit(settings, "INSTALLED_APPS = [", 'INSTALLED_APPS = [\n    "polls",')
    edit(settings, "from pathlib import Path", "import os\nfrom pathlib import Path\n\nimport dj_database_url")
    settings.write_text(settings.read_text() + '\nSTATIC_ROOT = BASE_DIR / "staticfiles"\n')
    write(site / "polls" / "models.py", """
        from django.db import models


        class Question(models.Model):
            text = models.CharField(max_length=200)
            created = models.DateTimeField(auto_now_add=True)
        """)
    write(site / "polls" / "forms.py", """
        from django import forms

        from .models import Question


        class QuestionForm(forms.ModelForm):
            class Meta:
                model = Question
                fields = ["text"]
        """)
    write(site / "polls" / "admin.py", """
        from django.contrib import admin

        from .models import Question

        admin.site.register(Question)
        """)
    write(site / "polls" / "views.py", """
        from django.http import HttpResponse
        from django.shortcuts import redirect, render

        from .forms import QuestionForm
        from .models import Question


        def index(request):
            form = QuestionForm(request.POST or None)
            if request.method == "POST" and form.is_valid():
                form.save()
                return redirect("index")
            questions = Question.objects.order_by("-id")[:10]
            return render(request, "polls/index.html", {"form": form, "questions": questions})


        def healthz(request):
            return HttpResponse("ok")
        """)
    write(site / "polls" / "templates" / "polls" / "index.html", """
        {% load static %}<!doctype html>
        <html><head><link rel="stylesheet" href="{% static 'polls/one.css' %}"></head><body>
        <h1>Polls, edition one</h1>
        <form method="post">{% csrf_token %}{{ form }}<button>Ask</button></form>
        <ul>{% for q in questions %}<li>{{ q.text }}</li>{% endfor %}</ul>
        </body></html>
        """)
    write(site / "polls" / "static" / "polls" / "one.css", "h1 { color: teal; }\n")
    edit(site / "mysite" / "urls.py", "from django.urls import path",
         "from django.urls import path\n\nfrom polls import views")
    edit(site / "mysite" / "urls.py", "urlpatterns = [", 'urlpatterns = [\n    path("", views.index, name="index"),\n'
                                                         '    path("healthz", views.healthz),')
    write(site / "requirements.txt", """
        Django==5.2.19
        dj-database-url==3.1.2
        psycopg2-binary==2.9.13
        """)
    run(sys.executable, "manage.py", "makemigrations", "polls", cwd=site,
        env={"DJANGO_SECRET_KEY": "makemigrations-only", "DATABASE_URL": f"sqlite:///{root}/make.db"})
    return site


def flask_project(root: Path) -> Path:
    """The Flask tutorial's layout: a package with create_app(); notes in SQLite in the data directory."""
    app = root / "notes_app"
    write(app / "flaskr" / "__init__.py", """
        import os
        import sqlite3

        from flask import Flask, redirect, render_template, request, url_for


        def create_app():
            app = Flask(__name__)
            database = os.path.join(os.environ.get("DEPLOYKIT_DATA_DIR") or app.instance_path, "notes.db")

            def connect():
                connection = sqlite3.connect(database, timeout=10)
                connection.execute("CREATE TABLE IF NOT EXISTS note (text TEXT)")
                return connection

            @app.route("/", methods=["GET", "POST"])
            def index():
                with connect() as connection:
                    if request.method == "POST":
                        connection.execute("INSERT INTO note VALUES (?)", (request.form["text"],))
                        return redirect(url_for("index"))
                    notes = [row[0] for row in connection.execute("SELECT text FROM note")]
                return render_template("index.html", notes=notes)

            @app.route("/healthz")
            def healthz():
                return "ok"

            return app
        """)
    write(app / "flaskr" / "templates" / "index.html", """
        <!doctype html><link rel="stylesheet" href="{{ url_for('static', filename='style.css') }}">
        <h1>Notes</h1><ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>
        """)
    write(app / "flaskr" / "static" / "style.css", "h1 { color: navy; }\n")
    write(app / "pyproject.toml", """
        [project]
        name = "flaskr"
        version = "1.0.0"
        dependencies = ["Flask==3.1.3"]
        """)
    return app


def secrets(app: Path, values: dict[str, str]) -> Path:
    """`deploy secrets edit` as a user runs it, the editor writing the secrets (EDITOR is a script here)."""
    password = app.parent / f"{app.name}.vault-password"
    password.write_text(PASSWORD + "\n")
    editor = app.parent / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'w').write(sys.argv[2])\n")
    content = json.dumps({"app_secrets": values})
    deploy("secrets", "edit", "--vault-password-file", str(password), cwd=app,
           env={"EDITOR": f"{sys.executable} {editor} '{content}'"})
    assert (app / "secrets.yml").read_text().startswith("$ANSIBLE_VAULT;"), "the secrets file is encrypted"
    return password


@pytest.fixture(scope="module")
def apps(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("users")
    return {"django": django_project(root), "flask": flask_project(root)}


def test_init_detects_each_app_and_writes_its_deploykit_yml(apps):
    django = deploy("init", cwd=apps["django"])
    assert "framework django: manage.py" in django.stdout
    spec = (apps["django"] / "deploykit.yml").read_text()
    for line in ("name: mysite", "framework: django", "wsgi: 'mysite.wsgi:application'",
                 "asgi: 'mysite.asgi:application'",
                 "django_settings: mysite.settings", "requirements: requirements.txt", "python: '3.13'",
                 "release_command: python manage.py migrate --noinput"):
        assert line in spec, line
    flask = deploy("init", "--python", "3.11", "--name", "notes", cwd=apps["flask"])
    assert "wsgi flaskr:create_app()" in flask.stdout
    assert "requirements: pyproject.toml" in (apps["flask"] / "deploykit.yml").read_text()
    again = deploy("init", cwd=apps["django"])  # run again: nothing changes
    assert "deploykit.yml: unchanged" in again.stdout


def configure(apps: dict[str, Path]) -> None:
    """The user's edits of deploykit.yml: the health view, build-only settings, the data directory."""
    django = apps["django"] / "deploykit.yml"
    edit(django, "health_path: /", "health_path: /healthz")
    edit(django, "  env: {}", "  env: {DJANGO_SECRET_KEY: build-only-not-a-secret, DATABASE_URL: 'sqlite:////tmp/b.db'}")
    flask = apps["flask"] / "deploykit.yml"
    edit(flask, "health_path: /", "health_path: /healthz")
    edit(flask, "database: true", "database: false")


@pytest.fixture(scope="module")
def built(apps, docker_client) -> dict[str, Path]:
    deploy("init", cwd=apps["django"])
    deploy("init", "--python", "3.11", "--name", "notes", cwd=apps["flask"])
    configure(apps)
    passwords = {"django": secrets(apps["django"], {"DJANGO_SECRET_KEY": "s3cret-" * 8}),
                 "flask": secrets(apps["flask"], {"NOTES_TOKEN": "not-shown"})}
    for name, app in apps.items():
        for version in ("1.0.0", "1.0.1"):
            if version == "1.0.1" and name == "django":  # edition two: its own stylesheet, the first one gone
                index = app / "polls" / "templates" / "polls" / "index.html"
                edit(index, "one.css", "two.css")
                edit(index, "edition one", "edition two")
                (app / "polls" / "static" / "polls" / "one.css").rename(app / "polls" / "static" / "polls" / "two.css")
            # an environment variable baked into one release, quotes and a dollar kept as written
            baked = ("--env", 'EDITION=two $HOME "quoted"') if (name, version) == ("flask", "1.0.1") else ()
            deploy("build", "--version", version, "--rebuild", *baked, cwd=app)
    labels = docker_client.images.get("deploykit/mysite:1.0.0").labels  # what deploy checks a variant against
    assert set(labels["io.deploykit.variants"].split(",")) >= {"gunicorn-gthread", "uvicorn", "granian"}
    return passwords


def page(host: dict[str, str], path: str, name: str, data: dict[str, str] | None = None, opener=None):
    """(status, headers, body) of a GET (or a form POST with `data`) through the host's nginx, Host `name`."""
    return request(opener or client(), host["address"], path, data, host=name)


def swap_under_load(fleet, name: str, *args: str, cwd: Path, checks: tuple[str, ...] = NO_CHECKS):
    """A deploy from the app's directory while the load client hits its health view on every host."""
    load = Load(fleet.hosts, path="/healthz", host_header=name)
    try:
        result = deploy(*checks, *args, cwd=cwd)
    finally:
        counts = load.finish()
    assert dropped(counts) == 0, describe(counts)
    assert counts["requests"] > 1000
    return result


def test_a_django_project_deploys_swaps_under_load_and_rolls_back(apps, built, provisioned_fleet):
    fleet = provisioned_fleet[0]
    inventory = ("-i", str(fleet.inventory), "--vault-password-file", str(built["django"]))
    # the fleet may serve another protocol: the first deploy of this app recreates
    first = deploy(*NO_CHECKS, *inventory, "--version", "1.0.0", "--strategy", "recreate", cwd=apps["django"])
    assert "s3cret" not in first.stdout + first.stderr
    host = fleet.hosts[0]
    opener = client()
    status, _, body = page(host, "/", "mysite.lab", opener=opener)
    assert status == 200 and "edition one" in body, body[:500]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
    status, headers, _ = page(host, "/", "mysite.lab", {"csrfmiddlewaretoken": token, "text": "Deployed?"}, opener)
    assert status == 302, headers
    assert "Deployed?" in page(host, "/", "mysite.lab", opener=opener)[2]
    for path in ("/static/admin/css/base.css", "/static/polls/one.css"):  # from the host, by nginx
        status, headers, _ = page(host, path, "mysite.lab")
        assert status == 200 and "X-Deploykit-Instance" not in headers, (path, status, headers)
    assert page(host, "/admin/login/", "mysite.lab")[0] == 200
    # the project's own asgi.py (startproject wrote it; init found it) on uvicorn: refused before it listens, as its
    # settings keep database connections (conn_max_age=60), one of which each request over ASGI would keep
    refused = deploy(*NO_CHECKS, *inventory, "--version", "1.0.0", "--variant", "uvicorn", cwd=apps["django"],
                     check=False)
    assert refused.returncode != 0
    assert "set CONN_MAX_AGE to 0 or use a pool" in refused.stdout + refused.stderr, refused.stdout[-3000:]
    assert "edition one" in page(host, "/", "mysite.lab")[2]  # the old container serves on
    swap_under_load(fleet, "mysite.lab", *inventory, "--version", "1.0.1", cwd=apps["django"])
    for host in fleet.hosts:
        assert "edition two" in page(host, "/", "mysite.lab")[2]
        # the new release's stylesheet, and the old one's (its pages were out there during the swap)
        assert page(host, "/static/polls/two.css", "mysite.lab")[0] == 200
        assert page(host, "/static/polls/one.css", "mysite.lab")[0] == 200
    back = deploy("rollback", *NO_CHECKS, *inventory, cwd=apps["django"])
    assert "rolling back to 1.0.0" in back.stdout
    assert "edition one" in page(fleet.hosts[0], "/", "mysite.lab")[2]
    assert "Deployed?" in page(fleet.hosts[0], "/", "mysite.lab")[2]  # in PostgreSQL all along


def test_a_flask_factory_app_keeps_its_data_across_deploys_and_swaps_under_load(apps, built, provisioned_fleet,
                                                                              docker_client):
    fleet = provisioned_fleet[0]
    inventory = ("-i", str(fleet.inventory), "--vault-password-file", str(built["flask"]))
    deploy(*NO_CHECKS, *inventory, "--version", "1.0.0", "--strategy", "recreate", cwd=apps["flask"])
    host = fleet.hosts[0]
    opener = client()
    status, headers, _ = page(host, "/", "notes.lab", {"text": "kept across deploys"}, opener)
    assert status == 302, headers
    assert page(host, "/static/style.css", "notes.lab")[0] == 200
    # with the swap-window report: its own load goes to the app's health path with the app's host name
    result = swap_under_load(fleet, "notes.lab", *inventory, "--version", "1.0.1", cwd=apps["flask"],
                             checks=("--no-smoke",))
    window = re.search(r"SWAP WINDOW: (\d+) requests, (\d+) failed.*; report (\S+)/swap\.html", result.stdout)
    assert window and int(window[1]) > 100, result.stdout[-2000:]
    # none dropped (refused, reset, an HTTP error); a request slower than the client's 10 s timeout, on a machine
    # this busy, is slow, not dropped (see weblab.dropped): it is in the report, not counted here
    assert dropped(json.loads((Path(window[3]) / "swap.json").read_text())["load"]) == 0, result.stdout[-2000:]
    status, headers, body = page(host, "/", "notes.lab")
    assert status == 200 and "kept across deploys" in body
    assert headers["X-Deploykit-Release"] == "1.0.1"
    assert 'EDITION=two $HOME "quoted"' in docker_client.images.get("deploykit/notes:1.0.1").attrs["Config"]["Env"]


def test_an_app_that_does_not_import_fails_its_build_with_its_own_error(tmp_path, docker_client):
    """The build imports the app as the servers will: a module missing from the requirements fails the build
    with the app's own traceback, and no image is made."""
    app = flask_project(tmp_path)
    init_py = app / "flaskr" / "__init__.py"
    init_py.write_text("import markdown_it_not_installed\n" + init_py.read_text())
    deploy("init", "--python", "3.11", "--name", "broken-notes", cwd=app)
    result = deploy("build", "--version", "1.0.0", cwd=app, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ModuleNotFoundError: No module named 'markdown_it_not_installed'" in result.stderr, result.stderr[-3000:]
    assert "cannot be loaded as the servers would load it" in result.stderr
    assert not docker_client.images.list(name="deploykit/broken-notes")


def test_a_health_path_that_never_answers_2xx_fails_the_gate_naming_the_status(apps, built, provisioned_fleet):
    """The old release keeps serving; the deploy names the status the app gave."""
    fleet = provisioned_fleet[0]
    inventory = ("-i", str(fleet.inventory), "--vault-password-file", str(built["flask"]))
    deploy(*NO_CHECKS, *inventory, "--version", "1.0.1", "--strategy", "recreate", cwd=apps["flask"])  # as before
    spec = apps["flask"] / "deploykit.yml"
    spec.write_text(spec.read_text().replace("health_path: /healthz", "health_path: /no-such-page")
                    .replace("health_timeout: 60", "health_timeout: 10"))
    try:
        result = deploy(*NO_CHECKS, *inventory, "--version", "1.0.0", cwd=apps["flask"], check=False)
    finally:
        spec.write_text(spec.read_text().replace("health_path: /no-such-page", "health_path: /healthz"))
    assert result.returncode == 2, result.stdout[-2000:]
    # the launcher asks the app for its health before it binds: the container ends, saying what it was answered
    assert re.search(r"exited before it was healthy; its last words: .*answered 404", result.stderr), \
        result.stderr[-3000:]
    status, headers, _ = page(fleet.hosts[0], "/healthz", "notes.lab")
    assert status == 200 and headers["X-Deploykit-Release"] == "1.0.1"  # the old one serves on
