"""Detect how to serve a user's Python web project (the directory `deploy init` runs in).

Only reads files: sources are parsed with `ast`, never imported or run, so detecting a project cannot execute
its code, need its dependencies, or touch its database. Each value says where it came from (`Detected.found`),
and each failure says what was looked for and which flag tells deploykit instead.
"""

from __future__ import annotations

import ast
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from deploy_tool.errors import DeployError

FRAMEWORKS = ("django", "flask")
WSGI_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\(\))?$")
MODULE_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
NAME_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
NAME_MAX = 40
FACTORY_NAMES = ("create_app", "make_app")
# Module names that, among several Flask modules, are meant to be served (in this order of preference).
PREFERRED_MODULES = ("wsgi", "app", "application", "main")
# Directories and module names that hold tests, tooling or installed packages, never the app to serve.
SKIPPED_NAMES = frozenset({"test", "tests", "testing", "conftest", "setup", "venv", "env", "virtualenv",
                           "site-packages", "node_modules", "__pycache__"})
WSGI_FORM = "pass --wsgi module:attribute (or module:factory() for an app factory)"
WSGI_HINT = f"{WSGI_FORM}, e.g. --wsgi app:app"


class DetectError(DeployError):
    """What detection looked for and did not find (or a flag it cannot use), with the flag that says it instead.

    A DeployError, so the CLI prints it as message and hint like every other failure."""


@dataclass(frozen=True)
class Detected:
    """How to serve a project, whether each value was detected or given by a flag."""

    framework: str  # "django" or "flask"
    name: str  # default app name: a slug of the directory's name
    wsgi: str  # "module:attribute", or "module:factory()" for an app factory
    django_settings: str  # the settings module for Django, "" for Flask
    requirements: str  # "requirements.txt" or "pyproject.toml" relative to the directory, "" when neither
    found: tuple[str, ...]  # where each value came from, one line each
    asgi: str = ""  # Django's ASGI entry (the asgi.py beside its wsgi.py), "" when none


@dataclass(frozen=True)
class _Choice:
    """One value and where it came from (a file, or the flag that gave it)."""

    value: str
    source: str

    def line(self, what: str) -> str:
        """The `found` line for this value, e.g. "framework django: manage.py"."""
        return f"{what} {self.value or 'none'}: {self.source}"


@dataclass(frozen=True)
class _FlaskModule:
    """A top-level module or package of the project whose source imports flask, and what it serves."""

    module: str  # its import name
    path: str  # the parsed file, relative to the project directory
    is_package: bool
    app: str  # name of a module-level `NAME = Flask(...)`, "" when none
    factory: str  # name of a module-level create_app/make_app function, "" when none

    @property
    def entry(self) -> str:
        """The WSGI entry it offers: the app object first, else the factory; "" when it offers neither."""
        if self.app:
            return f"{self.module}:{self.app}"
        return f"{self.module}:{self.factory}()" if self.factory else ""

    @property
    def origin(self) -> str:
        """Where the entry was found, for the `found` line."""
        what = f"{self.app} = Flask(...)" if self.app else f"def {self.factory}"
        return f"{what} in {self.path}"


class _Project:
    """The project directory, with the scans of it done at most once and only when a value needs them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def relative(self, path: Path) -> str:
        """A path inside the project as the user sees it from the project directory."""
        return path.relative_to(self.directory).as_posix()

    @property
    def manage_py(self) -> Path | None:
        """Django's manage.py, the sign of a Django project."""
        path = self.directory / "manage.py"
        return path if path.is_file() else None

    @cached_property
    def flask_modules(self) -> tuple[_FlaskModule, ...]:
        """Top-level modules and packages whose source imports flask, in name order."""
        found = (_flask_module(self, *source) for source in _top_level_sources(self.directory))
        return tuple(module for module in found if module is not None)


def detect(directory: Path, framework: str | None = None, wsgi: str | None = None,
           django_settings: str | None = None, requirements: str | None = None, name: str | None = None) -> Detected:
    """Flags given (not None) override what is detected; what is given is not detected."""
    if not directory.is_dir():
        raise DetectError(f"no project directory {directory}", hint="run deploy init in your project's directory")
    project = _Project(directory.resolve())
    given_wsgi = _given_wsgi(wsgi)
    _check_settings_flag(django_settings)
    chosen_framework = _given_framework(framework) or _detect_framework(project)
    settings, entry = _serving(project, chosen_framework.value, given_wsgi, django_settings)
    chosen_requirements = _requirements(project, requirements)
    chosen_name = _name(project.directory, name)
    found = [chosen_framework.line("framework"), entry.line("wsgi")]
    asgi = _django_asgi(project, entry.value) if chosen_framework.value == "django" else None
    found += [asgi.line("asgi")] if asgi else []
    found += [settings.line("django_settings")] if settings.value else []
    found += [chosen_requirements.line("requirements"), chosen_name.line("name")]
    return Detected(framework=chosen_framework.value, name=chosen_name.value, wsgi=entry.value,
                    django_settings=settings.value, requirements=chosen_requirements.value, found=tuple(found),
                    asgi=asgi.value if asgi else "")


def _given_framework(framework: str | None) -> _Choice | None:
    """The --framework flag, checked; None when it was not given."""
    if framework is None:
        return None
    if framework not in FRAMEWORKS:
        raise DetectError(f"unknown framework {framework!r} (--framework)", hint="pass --framework django or flask")
    return _Choice(framework, "--framework")


def _given_wsgi(wsgi: str | None) -> _Choice | None:
    """The --wsgi flag, checked against the module:attribute form servers accept; None when not given."""
    if wsgi is None:
        return None
    if not WSGI_PATTERN.fullmatch(wsgi):
        raise DetectError(f"--wsgi {wsgi!r} is not module:attribute nor module:factory()", hint=WSGI_HINT)
    return _Choice(wsgi, "--wsgi")


def _check_settings_flag(django_settings: str | None) -> None:
    """Reject a --django-settings that is not a dotted module name (it becomes DJANGO_SETTINGS_MODULE)."""
    if django_settings is not None and not MODULE_PATTERN.fullmatch(django_settings):
        raise DetectError(f"--django-settings {django_settings!r} is not a dotted module name",
                          hint="pass --django-settings like mysite.settings")


def _detect_framework(project: _Project) -> _Choice:
    """Django when there is a manage.py (it wins over Flask), else Flask when a top-level module imports it."""
    flask_paths = ", ".join(module.path for module in project.flask_modules)
    if project.manage_py is not None:
        also = f" (flask is imported in {flask_paths} too: --framework flask serves that)" if flask_paths else ""
        return _Choice("django", f"manage.py{also}")
    if flask_paths:
        return _Choice("flask", f"imported in {flask_paths}")
    raise DetectError(f"no manage.py and no module importing flask was found in {project.directory}",
                      hint="pass --framework (django or flask) and --wsgi (module:attribute)")


def _serving(project: _Project, framework: str, wsgi: _Choice | None,
             django_settings: str | None) -> tuple[_Choice, _Choice]:
    """The settings module (Django only) and the WSGI entry of the chosen framework."""
    if framework == "flask":
        if django_settings is not None:
            raise DetectError("--django-settings was given for a Flask project",
                              hint="leave out --django-settings, or pass --framework django")
        return _Choice("", ""), wsgi or _flask_wsgi(project)
    settings = _Choice(django_settings, "--django-settings") if django_settings else _manage_py_settings(project)
    return settings, wsgi or _django_wsgi(project, settings.value)


def _parse(path: Path) -> ast.Module | None:
    """The syntax tree of a Python file, or None when it cannot be read or is not valid Python."""
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None


def _string(node: ast.expr | None) -> str | None:
    """The value of a string literal, None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _module_assignments(tree: ast.Module) -> list[tuple[str, ast.expr]]:
    """Module-level `NAME = value` and `NAME: type = value` statements, as (NAME, value)."""
    assignments: list[tuple[str, ast.expr]] = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            names = [target.id for target in node.targets if isinstance(target, ast.Name)]
            assignments += [(name, node.value) for name in names]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            assignments.append((node.target.id, node.value))
    return assignments


# --- Django -------------------------------------------------------------------------------------------------------


def _manage_py_settings(project: _Project) -> _Choice:
    """The settings module manage.py sets with os.environ.setdefault("DJANGO_SETTINGS_MODULE", ...)."""
    tree = _parse(project.manage_py) if project.manage_py else None
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)] if tree else []
    for call in calls:
        settings = _settings_default(call)
        if settings:
            return _Choice(settings, "manage.py")
    where = "manage.py sets no" if project.manage_py else "no manage.py to read the"
    raise DetectError(f"{where} DJANGO_SETTINGS_MODULE (os.environ.setdefault) in {project.directory}",
                      hint="pass --django-settings, e.g. --django-settings mysite.settings")


def _settings_default(call: ast.Call) -> str | None:
    """The settings module of a `....setdefault("DJANGO_SETTINGS_MODULE", "X")` call, None for other calls."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "setdefault" and len(call.args) == 2):
        return None
    if _string(call.args[0]) != "DJANGO_SETTINGS_MODULE":
        return None
    value = _string(call.args[1])
    return value if value and MODULE_PATTERN.fullmatch(value) else None


def _module_file(directory: Path, module: str) -> Path | None:
    """The source file of a dotted module inside the directory (module.py or package/__init__.py)."""
    base = directory.joinpath(*module.split("."))
    for path in (base.parent / f"{base.name}.py", base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _django_wsgi(project: _Project, settings: str) -> _Choice:
    """The settings' WSGI_APPLICATION, else the wsgi.py startproject wrote next to the settings."""
    entry = _settings_wsgi(project, settings)
    if entry:
        return entry
    for package in _settings_packages(settings):
        path = project.directory.joinpath(*package.split("."), "wsgi.py")
        if path.is_file():
            module = f"{package}.wsgi" if package else "wsgi"
            return _Choice(f"{module}:application", project.relative(path))
    raise DetectError(f"no WSGI_APPLICATION in the settings {settings} and no wsgi.py beside them in "
                      f"{project.directory}", hint=f"{WSGI_FORM}, e.g. --wsgi mysite.wsgi:application")


def _django_asgi(project: _Project, wsgi: str) -> _Choice | None:
    """The asgi.py startproject wrote beside the wsgi.py (its `application`), which the ASGI variants serve
    natively; None when there is none."""
    package = wsgi.partition(":")[0].rpartition(".")[0]
    path = project.directory.joinpath(*package.split("."), "asgi.py") if package else project.directory / "asgi.py"
    tree = _parse(path) if path.is_file() else None
    if tree is None or "application" not in dict(_module_assignments(tree)):
        return None
    return _Choice(f"{package + '.' if package else ''}asgi:application", project.relative(path))


def _settings_wsgi(project: _Project, settings: str) -> _Choice | None:
    """The entry named by `WSGI_APPLICATION = "pkg.wsgi.application"` in the settings file, as pkg.wsgi:application."""
    path = _module_file(project.directory, settings)
    tree = _parse(path) if path else None
    if path is None or tree is None:
        return None
    for name, value in _module_assignments(tree):
        module, _, attribute = (_string(value) or "").rpartition(".")
        if name == "WSGI_APPLICATION" and WSGI_PATTERN.fullmatch(f"{module}:{attribute}"):
            return _Choice(f"{module}:{attribute}", f"WSGI_APPLICATION in {project.relative(path)}")
    return None


def _settings_packages(settings: str) -> list[str]:
    """Packages that may hold the project's wsgi.py, nearest first: "config.settings.prod" gives config.settings
    and config; top-level settings give "" (the project directory itself)."""
    parts = settings.split(".")
    return [".".join(parts[:end]) for end in range(len(parts) - 1, 0, -1)] or [""]


# --- Flask --------------------------------------------------------------------------------------------------------


def _top_level_sources(directory: Path) -> list[tuple[str, Path, bool]]:
    """Importable top-level modules and packages as (import name, source file, is package), in name order.

    Tests, virtualenvs, hidden directories and installed packages are left out: they import flask without
    being the app."""
    sources: list[tuple[str, Path, bool]] = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix == ".py" and _is_app_name(path.stem):
            sources.append((path.stem, path, False))
        elif path.is_dir() and _is_app_name(path.name) and not (path / "pyvenv.cfg").exists():
            init = path / "__init__.py"
            sources += [(path.name, init, True)] if init.is_file() else []
    return sources


def _is_app_name(name: str) -> bool:
    """Whether a top-level module name may be the app: importable, not hidden, not tests or tooling."""
    is_test = name.startswith("test_") or name.endswith("_test")
    return name.isidentifier() and not name.startswith(".") and name not in SKIPPED_NAMES and not is_test


def _flask_module(project: _Project, module: str, path: Path, is_package: bool) -> _FlaskModule | None:
    """What a module offers to serve, or None when its source does not import flask (or does not parse)."""
    tree = _parse(path)
    if tree is None or not _imports_flask(tree):
        return None
    factories = [node.name for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name in FACTORY_NAMES]
    return _FlaskModule(module=module, path=project.relative(path), is_package=is_package,
                        app=_flask_app_name(tree), factory=factories[0] if factories else "")


def _is_flask(module: str | None) -> bool:
    """Whether an imported module name is flask or one of its submodules (not flask_* extensions)."""
    return module is not None and (module == "flask" or module.startswith("flask."))


def _imports_flask(tree: ast.Module) -> bool:
    """Whether the source imports flask anywhere (`import flask`, `from flask import ...`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(_is_flask(alias.name) for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_flask(node.module):
            return True
    return False


def _flask_app_name(tree: ast.Module) -> str:
    """The name of the first module-level `NAME = Flask(...)` (or `flask.Flask(...)`, or an alias), "" if none."""
    classes, modules = {"Flask"}, {"flask"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "flask" and node.level == 0:
            classes |= {alias.asname or alias.name for alias in node.names if alias.name == "Flask"}
        elif isinstance(node, ast.Import):
            modules |= {alias.asname for alias in node.names if alias.name == "flask" and alias.asname}
    for name, value in _module_assignments(tree):
        if isinstance(value, ast.Call) and _names_flask_class(value.func, classes, modules):
            return name
    return ""


def _names_flask_class(func: ast.expr, classes: set[str], modules: set[str]) -> bool:
    """Whether a called expression is the Flask class: `Flask` (or its alias) or `flask.Flask`."""
    if isinstance(func, ast.Name):
        return func.id in classes
    return isinstance(func, ast.Attribute) and func.attr == "Flask" and isinstance(func.value, ast.Name) \
        and func.value.id in modules


def _flask_wsgi(project: _Project) -> _Choice:
    """The entry of the one Flask module meant to be served (see _choose_flask)."""
    modules = project.flask_modules
    candidates = [module for module in modules if module.entry]
    if not modules:
        raise DetectError(f"no module importing flask was found in {project.directory}", hint=WSGI_HINT)
    if not candidates:
        paths = ", ".join(module.path for module in modules)
        raise DetectError(f"{paths} import flask, but none has a module-level `NAME = Flask(...)` nor a "
                          f"{' or '.join(FACTORY_NAMES)} function", hint=WSGI_HINT)
    chosen = _choose_flask(candidates)
    return _Choice(chosen.entry, chosen.origin)


def _choose_flask(candidates: list[_FlaskModule]) -> _FlaskModule:
    """The one candidate, else the first by preferred module name, else the only package with a factory."""
    if len(candidates) == 1:
        return candidates[0]
    for preferred in PREFERRED_MODULES:
        named = [module for module in candidates if module.module == preferred]
        if named:
            return named[0]
    factories = [module for module in candidates if module.is_package and module.factory]
    if len(factories) == 1:
        return factories[0]
    listed = ", ".join(f"{module.entry} ({module.path})" for module in candidates)
    raise DetectError(f"several Flask apps were found: {listed}", hint="pass --wsgi with the one to serve")


# --- requirements and name ------------------------------------------------------------------------------------------


def _requirements(project: _Project, given: str | None) -> _Choice:
    """The --requirements file (checked), else requirements.txt, else a pyproject.toml declaring dependencies."""
    if given is not None:
        return _Choice(_given_requirements(project.directory, given), "--requirements")
    if (project.directory / "requirements.txt").is_file():
        return _Choice("requirements.txt", "requirements.txt")
    if _pyproject_has_dependencies(project.directory / "pyproject.toml"):
        return _Choice("pyproject.toml", "[project] dependencies in pyproject.toml")
    return _Choice("", "no requirements.txt, no [project] dependencies in pyproject.toml")


def _given_requirements(directory: Path, given: str) -> str:
    """A --requirements path, relative to the project directory: it must be a file inside that directory."""
    path = (directory / given).resolve()
    hint = "pass --requirements with a requirements.txt or pyproject.toml of the project directory"
    if not path.is_relative_to(directory):
        raise DetectError(f"--requirements {given!r} is outside the project directory {directory}", hint=hint)
    if not path.is_file():
        raise DetectError(f"--requirements {given!r}: no such file in {directory}", hint=hint)
    return path.relative_to(directory).as_posix()


def _pyproject_has_dependencies(path: Path) -> bool:
    """Whether a pyproject.toml has a [project] table with dependencies (listed, or dynamic from the backend)."""
    try:
        with path.open("rb") as file:
            project = tomllib.load(file).get("project")
    except (OSError, tomllib.TOMLDecodeError):
        return False
    if not isinstance(project, dict):
        return False
    dynamic = project.get("dynamic", [])
    return isinstance(project.get("dependencies"), list) or (isinstance(dynamic, list) and "dependencies" in dynamic)


def _name(directory: Path, given: str | None) -> _Choice:
    """The --name flag (checked), else the directory's name as a slug."""
    if given is not None:
        if len(given) > NAME_MAX or not NAME_PATTERN.fullmatch(given):
            raise DetectError(f"--name {given!r} is not a name deploykit can use",
                              hint=f"pass --name with lowercase letters, digits and hyphens, starting with a "
                                   f"letter, at most {NAME_MAX} characters (e.g. my-site)")
        return _Choice(given, "--name")
    name = slug(directory.name)
    if not name:
        raise DetectError(f"the directory name {directory.name!r} gives no app name", hint="pass --name, e.g. my-site")
    return _Choice(name, f"directory {directory.name}")


def slug(text: str) -> str:
    """A name for the app: lowercase ASCII letters, digits and single hyphens, starting with a letter, at most
    40 characters ("My_Site" gives "my-site"; a leading digit gets an "app-" prefix); "" when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if name[:1].isdigit():
        name = f"app-{name}"
    return name[:NAME_MAX].rstrip("-")
