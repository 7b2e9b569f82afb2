"""deploy_tool.detect on real projects: Django ones made by django-admin, Flask ones written as the Flask docs do.

Nothing here needs Docker or the network. Each detected entry is also loaded in a separate Python process, to show
that what detect() read from the files (without importing them) is what a WSGI server would serve.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from deploy_tool.detect import Detected, DetectError, detect

VENV_BIN = Path(sys.executable).parent

# The Flask tutorial's application factory, flaskr/__init__.py, as the tutorial has the user write it.
FLASKR_INIT = '''\
import os

from flask import Flask


def create_app(test_config=None):
    """Create and configure an instance of the Flask application."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="dev",
        DATABASE=os.path.join(app.instance_path, "flaskr.sqlite"),
    )

    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.update(test_config)

    try:
        os.makedirs(app.instance_path)
    except OSError:
        pass

    @app.route("/hello")
    def hello():
        return "Hello, World!"

    from flaskr import db

    db.init_app(app)

    from flaskr import auth, blog

    app.register_blueprint(auth.bp)
    app.register_blueprint(blog.bp)
    app.add_url_rule("/", endpoint="index")

    return app
'''
# The tutorial's other modules, cut down to what create_app uses from them.
FLASKR_MODULES = {
    "db.py": "from flask import current_app, g\n\n\ndef init_app(app):\n    app.teardown_appcontext(lambda e: None)\n",
    "auth.py": 'from flask import Blueprint\n\nbp = Blueprint("auth", __name__, url_prefix="/auth")\n',
    "blog.py": 'from flask import Blueprint\n\nbp = Blueprint("blog", __name__)\n\n\n@bp.route("/")\n'
               'def index():\n    return "posts"\n',
}
FLASKR_PYPROJECT = '''\
[project]
name = "flaskr"
version = "1.0.0"
description = "The basic blog app built in the Flask tutorial."
dependencies = [
    "flask",
]

[project.optional-dependencies]
test = ["pytest"]

[build-system]
requires = ["flit_core<4"]
build-backend = "flit_core.buildapi"
'''
FLASKR_CONFTEST = "import pytest\n\nfrom flaskr import create_app\n\n\n@pytest.fixture\ndef app():\n" \
                  "    return create_app({'TESTING': True})\n"
# The quickstart's minimal application, as a single app.py.
FLASK_APP_PY = 'from flask import Flask\n\napp = Flask(__name__)\n\n\n@app.route("/")\n' \
               'def hello_world():\n    return "<p>Hello, World!</p>"\n'


def write(path: Path, text: str) -> Path:
    """Write a file, creating its directories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command as the user would, failing the test with its output when it fails."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                            check=False)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def startproject(name: str, directory: Path) -> Path:
    """`django-admin startproject NAME DIRECTORY`, the venv's django-admin."""
    directory.mkdir(parents=True)
    run([str(VENV_BIN / "django-admin"), "startproject", name, str(directory)], cwd=directory.parent)
    return directory


def flask_tutorial(directory: Path) -> Path:
    """The Flask tutorial's project layout: the flaskr package, its tests, pyproject.toml and a virtualenv."""
    write(directory / "flaskr" / "__init__.py", FLASKR_INIT)
    for module, text in FLASKR_MODULES.items():
        write(directory / "flaskr" / module, text)
    write(directory / "tests" / "conftest.py", FLASKR_CONFTEST)
    write(directory / "pyproject.toml", FLASKR_PYPROJECT)
    write(directory / ".venv" / "lib" / "python3.11" / "site-packages" / "flask" / "app.py", FLASK_APP_PY)
    return directory


def serve_check(directory: Path, detected: Detected) -> str:
    """Load the detected WSGI entry in a fresh Python process in the project directory (as a WSGI server
    would) and return the type name of the application object."""
    module, _, attribute = detected.wsgi.partition(":")
    call = "()" if attribute.endswith("()") else ""
    code = (f"import importlib; target = getattr(importlib.import_module({module!r}), {attribute.rstrip('()')!r})"
            f"{call}; assert callable(target); print(type(target).__name__)")
    env = {"DJANGO_SETTINGS_MODULE": detected.django_settings} if detected.django_settings else {}
    return run([sys.executable, "-c", code], cwd=directory, env=env).strip()


def test_django_startproject_with_an_app(tmp_path: Path) -> None:
    project = startproject("mysite", tmp_path / "mysite")
    run([sys.executable, "manage.py", "startapp", "polls"], cwd=project)
    detected = detect(project)
    assert (detected.framework, detected.django_settings) == ("django", "mysite.settings")
    assert detected.wsgi == "mysite.wsgi:application"
    assert detected.requirements == ""
    assert detected.name == "mysite"
    assert "framework django: manage.py" in detected.found
    assert "wsgi mysite.wsgi:application: WSGI_APPLICATION in mysite/settings.py" in detected.found
    assert serve_check(project, detected) == "WSGIHandler"
    assert detected.asgi == "mysite.asgi:application"  # startproject's asgi.py: the ASGI variants serve it
    assert "asgi mysite.asgi:application: mysite/asgi.py" in detected.found
    assert serve_check(project, replace(detected, wsgi=detected.asgi)) == "ASGIHandler"
    (project / "mysite" / "asgi.py").unlink()
    assert detect(project).asgi == ""
    write(project / "requirements.txt", "Django>=5.2\n")
    assert detect(project).requirements == "requirements.txt"


def test_django_project_named_apart_from_its_directory(tmp_path: Path) -> None:
    project = startproject("config", tmp_path / "shop_site")
    detected = detect(project)
    assert detected.django_settings == "config.settings"
    assert detected.wsgi == "config.wsgi:application"
    assert detected.name == "shop-site"
    assert "name shop-site: directory shop_site" in detected.found
    assert serve_check(project, detected) == "WSGIHandler"


def test_django_without_wsgi_application_uses_the_wsgi_py_beside_the_settings(tmp_path: Path) -> None:
    project = startproject("mysite", tmp_path / "site")
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace("WSGI_APPLICATION", "# WSGI_APPLICATION"))
    detected = detect(project)
    assert detected.wsgi == "mysite.wsgi:application"
    assert "wsgi mysite.wsgi:application: mysite/wsgi.py" in detected.found


def test_django_settings_wsgi_application_is_followed(tmp_path: Path) -> None:
    project = startproject("mysite", tmp_path / "site")
    settings = project / "mysite" / "settings.py"
    # startproject quotes with ' or, when black is on PATH (Django formats what it generates), with "
    settings.write_text(re.sub(r"""(['"])mysite\.wsgi\.application\1""", '"mysite.serve.app"', settings.read_text()))
    assert detect(project).wsgi == "mysite.serve:app"


def test_django_manage_py_with_double_quotes(tmp_path: Path) -> None:
    project = startproject("mysite", tmp_path / "site")
    manage = project / "manage.py"
    manage.write_text(manage.read_text().replace("'mysite.settings'", '"mysite.settings"'))
    assert "'mysite.settings'" not in manage.read_text()
    assert detect(project).django_settings == "mysite.settings"


def test_django_without_wsgi_entry_names_the_wsgi_flag(tmp_path: Path) -> None:
    project = startproject("mysite", tmp_path / "site")
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace("WSGI_APPLICATION", "# WSGI_APPLICATION"))
    (project / "mysite" / "wsgi.py").unlink()
    with pytest.raises(DetectError, match="--wsgi") as raised:
        detect(project)
    assert "WSGI_APPLICATION" in str(raised.value)
    assert detect(project, wsgi="mysite.asgi:application").wsgi == "mysite.asgi:application"


def test_django_manage_py_without_settings_names_the_settings_flag(tmp_path: Path) -> None:
    project = startproject("mysite", tmp_path / "site")
    manage = project / "manage.py"
    manage.write_text(manage.read_text().replace("DJANGO_SETTINGS_MODULE", "OTHER_VARIABLE"))
    with pytest.raises(DetectError, match="--django-settings"):
        detect(project)
    assert detect(project, django_settings="mysite.settings").wsgi == "mysite.wsgi:application"


def test_django_with_explicit_wsgi_still_needs_settings(tmp_path: Path) -> None:
    with pytest.raises(DetectError, match="--django-settings"):
        detect(tmp_path, framework="django", wsgi="mysite.wsgi:application")
    given = detect(tmp_path, framework="django", wsgi="mysite.wsgi:application", django_settings="mysite.settings")
    assert (given.framework, given.wsgi, given.django_settings) == ("django", "mysite.wsgi:application",
                                                                    "mysite.settings")
    assert "django_settings mysite.settings: --django-settings" in given.found


def test_flask_tutorial_factory_layout(tmp_path: Path) -> None:
    project = flask_tutorial(tmp_path / "flask-tutorial")
    detected = detect(project)
    assert detected.framework == "flask"
    assert detected.wsgi == "flaskr:create_app()"
    assert detected.django_settings == ""
    assert detected.requirements == "pyproject.toml"
    assert detected.name == "flask-tutorial"
    assert "wsgi flaskr:create_app(): def create_app in flaskr/__init__.py" in detected.found
    assert serve_check(project, detected) == "Flask"


def test_flask_single_file_app(tmp_path: Path) -> None:
    project = tmp_path / "hello"
    write(project / "app.py", FLASK_APP_PY)
    detected = detect(project)
    assert (detected.framework, detected.wsgi, detected.requirements) == ("flask", "app:app", "")
    assert "wsgi app:app: app = Flask(...) in app.py" in detected.found
    assert serve_check(project, detected) == "Flask"


def test_requirements_txt_wins_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "app.py", FLASK_APP_PY)
    write(tmp_path / "pyproject.toml", FLASKR_PYPROJECT)
    write(tmp_path / "requirements.txt", "flask\n")
    assert detect(tmp_path).requirements == "requirements.txt"


def test_pyproject_without_project_dependencies_is_no_requirements(tmp_path: Path) -> None:
    write(tmp_path / "app.py", FLASK_APP_PY)
    write(tmp_path / "pyproject.toml", '[project]\nname = "hello"\n\n[tool.ruff]\nline-length = 120\n')
    assert detect(tmp_path).requirements == ""
    write(tmp_path / "pyproject.toml", "[tool.black]\nline-length = 120\n")
    assert detect(tmp_path).requirements == ""


def test_flask_app_object_is_preferred_to_a_factory_in_one_module(tmp_path: Path) -> None:
    write(tmp_path / "server.py", "from flask import Flask\n\n\ndef make_app():\n    return Flask(__name__)\n\n\n"
                                  "application = make_app()\nweb = Flask(__name__)\n")
    assert detect(tmp_path).wsgi == "server:web"


def test_flask_make_app_and_aliased_imports(tmp_path: Path) -> None:
    write(tmp_path / "service.py", "import flask\n\n\ndef make_app():\n    return flask.Flask(__name__)\n")
    assert detect(tmp_path).wsgi == "service:make_app()"
    write(tmp_path / "service.py", "import flask as fl\n\nsite: fl.Flask = fl.Flask(__name__)\n")
    assert detect(tmp_path).wsgi == "service:site"
    write(tmp_path / "service.py", "from flask import Flask as F\n\nweb = F(__name__)\n")
    assert detect(tmp_path).wsgi == "service:web"


def test_flask_skips_tests_and_virtualenvs(tmp_path: Path) -> None:
    write(tmp_path / "hello.py", FLASK_APP_PY)
    write(tmp_path / "test_hello.py", FLASK_APP_PY)
    write(tmp_path / "conftest.py", FLASK_APP_PY)
    write(tmp_path / "tests" / "__init__.py", FLASK_APP_PY)
    write(tmp_path / "venv" / "__init__.py", FLASK_APP_PY)
    write(tmp_path / "myenv" / "pyvenv.cfg", "home = /usr/bin\n")
    write(tmp_path / "myenv" / "__init__.py", FLASK_APP_PY)
    assert detect(tmp_path).wsgi == "hello:app"


def test_flask_prefers_conventional_module_names(tmp_path: Path) -> None:
    write(tmp_path / "admin.py", FLASK_APP_PY)
    write(tmp_path / "main.py", FLASK_APP_PY)
    assert detect(tmp_path).wsgi == "main:app"
    write(tmp_path / "app.py", FLASK_APP_PY)
    assert detect(tmp_path).wsgi == "app:app"


def test_flask_prefers_the_package_with_a_factory(tmp_path: Path) -> None:
    flask_tutorial(tmp_path)
    write(tmp_path / "admin.py", FLASK_APP_PY)
    assert detect(tmp_path).wsgi == "flaskr:create_app()"


def test_ambiguous_flask_modules_are_listed(tmp_path: Path) -> None:
    write(tmp_path / "shop.py", FLASK_APP_PY)
    write(tmp_path / "blog.py", FLASK_APP_PY)
    write(tmp_path / "helpers.py", "from flask import jsonify\n")
    with pytest.raises(DetectError, match="--wsgi") as raised:
        detect(tmp_path)
    assert "shop:app (shop.py)" in str(raised.value) and "blog:app (blog.py)" in str(raised.value)
    assert "helpers" not in str(raised.value)
    assert detect(tmp_path, wsgi="shop:app").wsgi == "shop:app"


def test_two_packages_with_factories_are_ambiguous(tmp_path: Path) -> None:
    flask_tutorial(tmp_path)
    write(tmp_path / "shop" / "__init__.py",
          "from flask import Flask\n\n\ndef create_app():\n    return Flask(__name__)\n")
    with pytest.raises(DetectError, match="--wsgi") as raised:
        detect(tmp_path)
    assert "flaskr:create_app() (flaskr/__init__.py)" in str(raised.value)
    assert "shop:create_app() (shop/__init__.py)" in str(raised.value)


def test_flask_extensions_are_not_flask(tmp_path: Path) -> None:
    write(tmp_path / "models.py", "from flask_sqlalchemy import SQLAlchemy\nimport flask_login\n\ndb = SQLAlchemy()\n")
    with pytest.raises(DetectError, match="no manage.py and no module importing flask"):
        detect(tmp_path)


def test_flask_imported_without_an_app_names_the_wsgi_flag(tmp_path: Path) -> None:
    write(tmp_path / "views.py", "from flask import render_template\n\n\ndef index():\n    return 1\n")
    with pytest.raises(DetectError, match="--wsgi") as raised:
        detect(tmp_path)
    assert "views.py" in str(raised.value)


def test_django_wins_over_flask_unless_flask_is_asked_for(tmp_path: Path) -> None:
    project = startproject("mysite", tmp_path / "both")
    write(project / "app.py", FLASK_APP_PY)
    detected = detect(project)
    assert detected.framework == "django"
    assert "--framework flask" in detected.found[0] and "app.py" in detected.found[0]
    flask = detect(project, framework="flask")
    assert (flask.framework, flask.wsgi, flask.django_settings) == ("flask", "app:app", "")
    assert "framework flask: --framework" in flask.found


def test_given_values_win_and_are_not_detected(tmp_path: Path) -> None:
    flask_tutorial(tmp_path)
    write(tmp_path / "requirements" / "prod.txt", "flask\ngunicorn\n")
    detected = detect(tmp_path, wsgi="flaskr:create_app()", requirements="requirements/prod.txt", name="blog")
    assert (detected.wsgi, detected.requirements, detected.name) == ("flaskr:create_app()", "requirements/prod.txt",
                                                                     "blog")
    assert {"wsgi flaskr:create_app(): --wsgi", "requirements requirements/prod.txt: --requirements",
            "name blog: --name"} <= set(detected.found)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect(empty, framework="flask", wsgi="app:app").wsgi == "app:app"


@pytest.mark.parametrize(("flags", "flag"), [
    ({"framework": "pyramid"}, "--framework"),
    ({"wsgi": "app"}, "--wsgi"),
    ({"wsgi": "app.app"}, "--wsgi"),
    ({"wsgi": "app:create_app(1)"}, "--wsgi"),
    ({"wsgi": "my-app:app"}, "--wsgi"),
    ({"requirements": "requirements.txt"}, "--requirements"),
    ({"requirements": "../outside.txt"}, "--requirements"),
    ({"name": "My Site"}, "--name"),
    ({"name": "a" * 41}, "--name"),
    ({"django_settings": "mysite/settings.py"}, "--django-settings"),
    ({"django_settings": "mysite.settings"}, "--django-settings"),
])
def test_bad_flags_name_the_flag(tmp_path: Path, flags: dict[str, str], flag: str) -> None:
    project = tmp_path / "project"
    write(project / "app.py", FLASK_APP_PY)
    write(tmp_path / "outside.txt", "flask\n")
    assert detect(project).wsgi == "app:app"
    with pytest.raises(DetectError, match=flag):
        detect(project, **flags)


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DetectError) as raised:
        detect(tmp_path)
    message = str(raised.value)
    assert "manage.py" in message and "flask" in message and str(tmp_path) in message
    assert "--framework" in message and "--wsgi" in message


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DetectError, match="no project directory"):
        detect(tmp_path / "nowhere")


@pytest.mark.parametrize(("directory", "name"), [
    ("My_Site", "my-site"),
    ("_my_site_", "my-site"),
    ("shop site (copy)", "shop-site-copy"),
    ("2048-game", "app-2048-game"),
    ("Café.Bar", "cafe-bar"),
    ("x" * 30 + "_" + "y" * 30, "x" * 30 + "-" + "y" * 9),
    ("a" * 39 + "_b", "a" * 39),
])
def test_name_is_a_slug_of_the_directory(tmp_path: Path, directory: str, name: str) -> None:
    project = tmp_path / directory
    write(project / "app.py", FLASK_APP_PY)
    assert detect(project).name == name
