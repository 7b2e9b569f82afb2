"""deploykit.yml: how deploykit builds, configures and deploys one app. The schema is written once, here:
`deploy init` renders the commented file from it, the loader checks a file against it (an unknown or mistyped
key is named with its line), and docs/deploykit-yml.md lists the same keys (a test keeps them in step).
"""

from __future__ import annotations

import difflib
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy_tool.detect import NAME_MAX, NAME_PATTERN, WSGI_PATTERN
from deploy_tool.errors import DeployError

FILE_NAME = "deploykit.yml"
PYTHONS = {"3.13": "trixie", "3.11": "bookworm"}  # the Python of each Debian release deploykit builds on
# a URL's path and query as sent in a request line: no spaces, no braces (nothing Ansible could take for a template)
URL_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@/%?-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Key:
    """One setting: its section and name, type, default, allowed values and what it is for (the comment)."""

    section: str
    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()


SECTIONS: dict[str, str] = {
    "app": "What the app is (detected by `deploy init`; flags of init override).",
    "build": "How `deploy build --version V` makes the release image (offline: wheels come from the controller).",
    "server": "How the app is served on each host, behind nginx.",
    "runtime": "What the app's container gets on the host.",
    "tls": "HTTPS at nginx (docs/deploy.md \"HTTPS\"); HTTP then redirects to it.",
    "hooks": "Commands run on the controller, in this directory (sh -c); a failing hook stops the deploy.",
}

SCHEMA: tuple[Key, ...] = (
    Key("app", "name", str, "", "the app's name: its image (NAME:VERSION), its data and static directories on hosts"),
    Key("app", "framework", str, "", "django or flask", ("django", "flask")),
    Key("app", "wsgi", str, "", "the WSGI entry: module:attribute, or module:factory() for an app factory"),
    Key("app", "asgi", str, "", "the app's own ASGI entry (module:attribute, e.g. a Django project's "
        "mysite.asgi:application), which the ASGI variants serve; without it they serve the WSGI app through a2wsgi"),
    Key("app", "django_settings", str, "", "Django's settings module (DJANGO_SETTINGS_MODULE); empty for Flask"),
    Key("build", "python", str, "3.13", "3.13 (a Debian 13 base) or 3.11 (a Debian 12 base)", tuple(PYTHONS)),
    Key("build", "requirements", str, "", "requirements.txt, or pyproject.toml (its [project] dependencies)"),
    Key("build", "exclude", list, [".git", ".venv", "venv", "__pycache__", "*.pyc", "node_modules"],
        "paths of this directory not copied into the image (deploykit.yml and the secrets file never are)"),
    Key("build", "env", dict, {}, "environment of the build's checks only (the import, collectstatic), e.g. a "
        "throwaway secret key; never secrets"),
    Key("build", "collectstatic", bool, True, "Django: run `manage.py collectstatic` in the build (STATIC_ROOT set)"),
    Key("build", "eventlet", bool, False, "also install gunicorn 25 with eventlet in a venv of its own, which the "
        "gunicorn-eventlet variant needs (gunicorn 26 dropped eventlet workers)"),
    Key("server", "variant", str, "gunicorn-gthread", "the server (docs/serving.md): uwsgi, uwsgi-http, gunicorn-sync, "
        "gunicorn-gthread, gunicorn-gevent, gunicorn-tornado, gunicorn-uvicorn, uvicorn, granian, granian-asgi, "
        "flup-prefork, flup-threaded; gunicorn-eventlet with build.eventlet"),
    Key("server", "processes", int, 4, "server processes (workers)"),
    Key("server", "threads", int, 1, "threads per process, for variants with threads"),
    Key("server", "names", list, [], "host names: nginx's server_name (the first) and Django's ALLOWED_HOSTS"),
    Key("server", "port", int, 0, "0: the host's one app slot (container deploykit-app, port 8000); a port of its "
        "own (1024-16382; blue-green takes the next one too): a slot of its own (container deploykit-NAME), so that "
        "several apps share the hosts"),
    Key("server", "health_path", str, "/", "a path the app answers with 2xx when it is well: the swap's health gate "
        "asks the new container for it"),
    Key("server", "health_timeout", int, 60, "seconds a new container has to pass its health gate"),
    Key("server", "warmup", list, [], "paths each server process asks of the app itself before it takes requests "
        "(e.g. [/, /polls/]): what the app builds on its first request is built before a user waits for it"),
    Key("runtime", "env", dict, {}, "environment variables of the app (plain values; secrets go in secrets_file)"),
    Key("runtime", "secrets_file", str, "secrets.yml", "an ansible-vault encrypted YAML mapping of environment "
        "variables (`deploy secrets edit`); a missing file means no secrets"),
    Key("runtime", "database", bool, True, "the PostgreSQL deploykit provisions, as DATABASE_URL (and DB_HOST, "
        "DB_PORT, DB_NAME, DB_USER, DB_PASSWORD)"),
    Key("runtime", "data_dir", str, "/data", "where the app's persistent directory (one per app on each host, kept "
        "across deploys and rollbacks) is mounted in its container; DEPLOYKIT_DATA_DIR says it"),
    Key("runtime", "release_command", str, "", "run once per deploy before the swap, in the new release's image (sh "
        "-c), e.g. `python manage.py migrate --noinput`; empty: none"),
    Key("tls", "source", str, "none", "none (plain HTTP), files (tls.certificate and tls.key: files here, the key "
        "encrypted with ansible-vault), host (files already on every host, e.g. certbot's) or self-signed (the "
        "lab: a certificate from deploykit's own CA, .deploykit/tls/ca.pem)", ("none", "files", "host", "self-signed")),
    Key("tls", "certificate", str, "", "the PEM certificate chain, the server's first: a file here (files) or on the "
        "hosts (host)"),
    Key("tls", "key", str, "", "its private key: a vault-encrypted file here (files) or a file on the hosts (host)"),
    Key("tls", "hsts_max_age", int, 0, "Strict-Transport-Security max-age in seconds (0: none; start with 300)"),
    Key("hooks", "before_build", str, "", "before `deploy build` builds the image"),
    Key("hooks", "before_swap", str, "", "before the deploy touches a host"),
    Key("hooks", "after_deploy", str, "", "after a deploy that succeeded"),
    Key("hooks", "after_rollback", str, "", "after a rollback that succeeded"),
)
KEYS = {(key.section, key.name): key for key in SCHEMA}


@dataclass(frozen=True)
class AppSpec:
    """A checked deploykit.yml: its directory and every setting (defaults filled in), by section."""

    directory: Path
    settings: dict[str, dict[str, Any]]

    def __getitem__(self, dotted: str) -> Any:
        section, _, name = dotted.partition(".")
        return self.settings[section][name]

    @property
    def name(self) -> str:
        return str(self["app.name"])

    @property
    def server_names(self) -> list[str]:
        """The app's host names (server.names; unset: NAME.lab, localhost, 127.0.0.1): the first is nginx's
        server_name and the Host that benchmarks and the swap-window load send."""
        return list(self["server.names"]) or [f"{self.name}.lab", "localhost", "127.0.0.1"]

    @property
    def slot(self) -> str:
        """The app's container name on each host: deploykit-app (the one slot), or deploykit-NAME with a port of its
        own (server.port)."""
        return f"deploykit-{self.name}" if self["server.port"] else "deploykit-app"

    @property
    def image_repository(self) -> str:
        """Where `deploy build` puts the app's releases: deploykit/NAME:VERSION."""
        return f"deploykit/{self.name}"

    @property
    def secrets_path(self) -> Path:
        return self.directory / str(self["runtime.secrets_file"])

    @property
    def needs_vault(self) -> bool:
        """Whether a deploy decrypts something: the secrets file, or the TLS key (tls.source files)."""
        return self.secrets_path.exists() or self["tls.source"] == "files"


def defaults() -> dict[str, dict[str, Any]]:
    settings: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key in SCHEMA:
        settings[key.section][key.name] = (list(key.default) if isinstance(key.default, list)
                                           else dict(key.default) if isinstance(key.default, dict) else key.default)
    return settings


def _fail(path: Path, node: yaml.Node | None, message: str, hint: str | None = None) -> DeployError:
    where = f"{path} line {node.start_mark.line + 1}" if node is not None else str(path)
    return DeployError(f"{where}: {message}", hint=hint)


def _closest(word: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def load(directory: Path) -> AppSpec:
    """Read and check DIRECTORY/deploykit.yml: every unknown key, wrong type or value is an error naming its line."""
    path = directory / FILE_NAME
    if not path.is_file():
        raise DeployError(f"no {FILE_NAME} in {directory}",
                          hint="run `deploy init` in your app's directory, or point at it with --project DIR")
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise DeployError(f"{path} is not valid YAML: {exc}") from exc
    settings = defaults()
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [])
    if not isinstance(root, yaml.MappingNode):
        raise _fail(path, root, "the file must be a mapping of sections: " + ", ".join(SECTIONS))
    for key_node, value_node in root.value:
        section = key_node.value
        if section not in SECTIONS:
            raise _fail(path, key_node, f"unknown section {section!r}", _closest(section, list(SECTIONS))
                        or "sections: " + ", ".join(SECTIONS))
        if value_node.tag == "tag:yaml.org,2002:null":
            continue
        if not isinstance(value_node, yaml.MappingNode):
            raise _fail(path, value_node, f"section {section!r} must be a mapping of keys")
        for name_node, node in value_node.value:
            key = KEYS.get((section, name_node.value))
            if key is None:
                known = [k.name for k in SCHEMA if k.section == section]
                raise _fail(path, name_node, f"unknown key {name_node.value!r} in section {section!r}",
                            _closest(str(name_node.value), known) or "keys there: " + ", ".join(known))
            settings[section][key.name] = _value(path, key, node)
    spec = AppSpec(directory.resolve(), settings)
    check(spec, path)
    return spec


def load_given(directory: str | None) -> AppSpec:
    """The app's checked deploykit.yml: in DIRECTORY (--project DIR), else in the working directory."""
    return load(Path(directory or ".").resolve())


def load_optional(directory: str | None) -> AppSpec | None:
    """The app's deploykit.yml when DIRECTORY is given or the working directory has one; else None."""
    if directory is None and not (Path.cwd() / FILE_NAME).is_file():
        return None
    return load_given(directory)


def _value(path: Path, key: Key, node: yaml.Node) -> Any:
    value = yaml.SafeLoader("").construct_document(node)
    if value is None:  # `key:` with nothing after it
        value = key.default
    if key.kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # python: 3.13 is read as a number
    if (key.kind is int and isinstance(value, bool)) or not isinstance(value, key.kind):
        raise _fail(path, node, f"{key.section}.{key.name} must be {_kinds[key.kind]}, not {value!r}")
    if key.choices and value not in key.choices:
        raise _fail(path, node, f"{key.section}.{key.name} must be one of {', '.join(key.choices)}, not {value!r}")
    if isinstance(value, dict):
        for env_name, env_value in value.items():
            if not isinstance(env_name, str) or not ENV_NAME.fullmatch(env_name) or isinstance(env_value, (dict, list)):
                raise _fail(path, node, f"{key.section}.{key.name}: {env_name!r} must be an environment variable "
                            "name with a plain value")
        value = {name: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
                 for name, v in value.items()}
    if key.kind is list and not all(isinstance(item, str) for item in value):
        raise _fail(path, node, f"{key.section}.{key.name} must be a list of strings")
    return value


_kinds = {str: "a string", int: "a whole number", bool: "true or false", list: "a list", dict: "a mapping"}


def check(spec: AppSpec, path: Path) -> None:
    """What each value must be beyond its type; the keys that must be set."""
    for dotted in ("app.name", "app.framework", "app.wsgi"):
        if not spec[dotted]:
            raise DeployError(f"{path}: {dotted} is not set", hint="`deploy init` detects it; or write it in")
    if len(spec.name) > NAME_MAX or not NAME_PATTERN.fullmatch(spec.name):
        raise DeployError(f"{path}: app.name {spec.name!r} must be lowercase letters, digits and '-', starting with "
                          f"a letter, at most {NAME_MAX} characters")
    if not WSGI_PATTERN.fullmatch(spec["app.wsgi"]):
        raise DeployError(f"{path}: app.wsgi {spec['app.wsgi']!r} must be module:attribute or module:factory()")
    if spec["app.asgi"] and not WSGI_PATTERN.fullmatch(spec["app.asgi"]):
        raise DeployError(f"{path}: app.asgi {spec['app.asgi']!r} must be module:attribute or module:factory()")
    if spec["app.framework"] == "django" and not spec["app.django_settings"]:
        raise DeployError(f"{path}: app.django_settings is not set (a Django app needs its settings module)")
    if not URL_PATH.fullmatch(spec["server.health_path"]):
        raise DeployError(f"{path}: server.health_path {spec['server.health_path']!r} must be a path: / then "
                          "letters, digits and URL punctuation, no spaces")
    warmup = spec["server.warmup"]
    if len(warmup) > 20 or not all(isinstance(p, str) and URL_PATH.fullmatch(p) and "," not in p for p in warmup):
        raise DeployError(f"{path}: server.warmup must list at most 20 paths (/ then letters, digits and URL "
                          f"punctuation, no spaces or commas), not {warmup!r}")
    for dotted, low, high in (("server.processes", 1, 64), ("server.threads", 1, 64),
                              ("server.health_timeout", 1, 3600)):
        if not low <= spec[dotted] <= high:
            raise DeployError(f"{path}: {dotted} must be {low}-{high}, not {spec[dotted]}")
    if spec["server.port"] and not 1024 <= spec["server.port"] <= 16382:
        raise DeployError(f"{path}: server.port must be 0 (the host's one app slot) or 1024-16382 (below the "
                          f"ephemeral ports; blue-green takes the next one too), not {spec['server.port']}")
    if not 0 <= spec["tls.hsts_max_age"] <= 63072000:
        raise DeployError(f"{path}: tls.hsts_max_age must be 0-63072000 seconds (two years), not "
                          f"{spec['tls.hsts_max_age']}")
    requirements = spec["build.requirements"]
    if requirements and not (spec.directory / requirements).is_file():
        raise DeployError(f"{path}: build.requirements names {requirements}, which is not in {spec.directory}")


def render(settings: dict[str, dict[str, Any]], found: tuple[str, ...] = ()) -> str:
    """The commented deploykit.yml of these settings, every key present (what `deploy init` writes)."""
    lines = ["# deploykit.yml: how deploykit builds, configures and deploys this app; written by `deploy init`.",
             "# Every key is shown with its value (the default where init detected nothing). Reference:",
             "# docs/deploykit-yml.md in deploykit. Commands, from this directory: deploy build --version V,",
             "# deploy --version V, deploy rollback, deploy bench, deploy secrets edit."]
    lines += [f"# init found: {line}" for line in found]
    for section, about in SECTIONS.items():
        lines += ["", f"# {about}", f"{section}:"]
        for key in (k for k in SCHEMA if k.section == section):
            lines += textwrap.wrap(key.help, width=116, initial_indent="  # ", subsequent_indent="  # ",
                                   break_on_hyphens=False, break_long_words=False)
            value = yaml.safe_dump({key.name: settings[section][key.name]}, default_flow_style=True,
                                   width=1000, sort_keys=False).strip()
            lines.append(f"  {value[1:-1]}")
    return "\n".join(lines) + "\n"
