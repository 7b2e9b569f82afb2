#!/usr/bin/env python3
"""deploykit-serve: start the configured WSGI server as PID 1, ready for zero-error reuse-port swaps.

The container's exec-form command. It reads its settings from DEPLOYKIT_* environment variables, binds
the listening socket where the server cannot do it right itself, then replaces itself (exec) with the
server, so that `docker stop`'s SIGTERM reaches the server directly. Per server (the measured traps are in
docs/serving.md):

- gunicorn: the socket is bound once here with SO_REUSEPORT and passed as fd 3 (`-b fd://3`). gunicorn's own
  --reuse-port binds one socket per worker, and every worker exit would reset that worker's queue.
  SIGTERM is gunicorn's graceful stop.
- uWSGI: binds with --reuse-port itself; SIGTERM is mapped to `gracefully_kill_them_all` (uWSGI's own TERM
  is a brutal reload) and --shutdown-sockets stops listening at once so queued connections migrate.
- flup: sets only SO_REUSEADDR, so the socket is bound here and passed as fd 0, the FastCGI convention;
  deploykit_flup adds the graceful stop flup lacks.
- granian: binds itself, a socket per worker, always with SO_REUSEPORT; SIGTERM closes them within
  milliseconds and lets requests in flight finish.
- uvicorn on its own: bound here, fd 3, served by deploykit_uvicorn, which closes it at SIGTERM in every process.
- ASGI servers (a variant's `interface: asgi`) serve deploykit_asgi: the app's own ASGI entry (DEPLOYKIT_ASGI,
  deploykit.yml app.asgi) or the WSGI app through a2wsgi.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

WSGI_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\(\))?$")

HERE = Path(__file__).resolve().parent
VARIANTS_FILE = Path(os.environ.get("DEPLOYKIT_VARIANTS_FILE", HERE / "variants.yml"))
DEFAULT_VENV = "/opt/venv"
APP_DIR = "/opt/app"  # where `deploy build` puts an app's code (apps/app.Dockerfile)


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    variant: str
    wsgi: str  # module:attribute or module:factory(): the image's DEPLOYKIT_WSGI (deploykit.yml app.wsgi)
    asgi: str = ""  # module:attribute, the app's own ASGI entry if it has one: DEPLOYKIT_ASGI (app.asgi)
    app_dir: str = APP_DIR  # the app's code
    bind: str = "127.0.0.1"
    port: int = 8000
    processes: int = 2
    threads: int = 1
    worker_connections: int = 100
    graceful_timeout: int = 30
    backlog: int = 1024

    @property
    def target(self) -> str:
        return self.wsgi

    @property
    def directory(self) -> str:
        return self.app_dir

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        def number(name: str, default: int, low: int = 1, high: int = 65535) -> int:
            raw = env.get(f"DEPLOYKIT_{name}", str(default))
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"DEPLOYKIT_{name} must be a whole number, not {raw!r}") from None
            if not low <= value <= high:
                raise ConfigError(f"DEPLOYKIT_{name} must be between {low} and {high}, not {value}")
            return value

        variant = env.get("DEPLOYKIT_VARIANT", "")
        wsgi = env.get("DEPLOYKIT_WSGI", "")
        if not WSGI_ENTRY.match(wsgi):
            raise ConfigError(f"DEPLOYKIT_WSGI must be module:attribute or module:factory(), not {wsgi!r} (an image "
                              "built by `deploy build` sets it from deploykit.yml's app.wsgi)")
        asgi = env.get("DEPLOYKIT_ASGI", "")
        if asgi and not WSGI_ENTRY.match(asgi):
            raise ConfigError(f"DEPLOYKIT_ASGI must be module:attribute or module:factory(), not {asgi!r} (an image "
                              "built by `deploy build` sets it from deploykit.yml's app.asgi)")
        return cls(variant=variant, wsgi=wsgi, asgi=asgi, app_dir=env.get("DEPLOYKIT_APP_DIR", APP_DIR),
                   bind=env.get("DEPLOYKIT_BIND", "127.0.0.1"),
                   port=number("PORT", 8000), processes=number("PROCESSES", 2, high=256),
                   threads=number("THREADS", 1, high=256), worker_connections=number("WORKER_CONNECTIONS", 100),
                   graceful_timeout=number("GRACEFUL_TIMEOUT", 30, high=3600), backlog=number("BACKLOG", 1024))


def load_variants(path: Path = VARIANTS_FILE) -> dict[str, dict[str, str]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["app_variants"]


def variant_spec(settings: Settings, variants: dict[str, dict[str, str]]) -> dict[str, str]:
    if settings.variant not in variants:
        raise ConfigError(f"DEPLOYKIT_VARIANT must be one of {', '.join(variants)}, not {settings.variant!r}")
    return variants[settings.variant]


def check_venv(settings: Settings, spec: dict[str, Any]) -> None:
    """A variant with a venv of its own (gunicorn-eventlet) runs only in an image built with it."""
    venv = spec.get("venv")
    if venv and not Path(venv, "bin", "python").exists():
        raise ConfigError(f"variant {settings.variant} runs from {venv}, which this image has not: build the "
                          "release with build.eventlet: true in deploykit.yml")


def entry_module(spec: dict[str, Any]) -> str:
    """The module whose `application` the variant's server loads: deploykit_wsgi, or deploykit_asgi for an
    ASGI server."""
    return "deploykit_asgi" if spec.get("interface") == "asgi" else "deploykit_wsgi"


def serves_own_asgi(settings: Settings, spec: dict[str, Any]) -> bool:
    """Whether the server serves the app's own ASGI entry (an ASGI server, and the image names one)."""
    return entry_module(spec) == "deploykit_asgi" and bool(settings.asgi)


def server_environment(settings: Settings, spec: dict[str, Any]) -> dict[str, str]:
    """Environment the server needs beyond the container's: the variant's own, and deploykit_wsgi's (or
    deploykit_asgi's), which every server loads: it marks each answer with the container and release (the swap's
    gate counts only the new container's answers) and puts the variant's adapters around the app. An ASGI server
    serves the app's own ASGI entry when it has one, else its WSGI app through a2wsgi."""
    env = {key: str(value) for key, value in spec.get("env", {}).items()}
    wraps = spec.get("wrap", [])
    env.update(PYTHONPATH=os.pathsep.join([str(HERE), settings.directory]),
               DEPLOYKIT_WSGI_WRAP=",".join(["mark_answers", *([wraps] if isinstance(wraps, str) else wraps)]))
    if serves_own_asgi(settings, spec):
        env["DEPLOYKIT_ASGI_TARGET"] = settings.asgi
    else:
        env["DEPLOYKIT_WSGI_TARGET"] = settings.target
    return env


def server_command(settings: Settings, spec: dict[str, Any]) -> tuple[list[str], int | None]:
    """The server's argv, and the fd number the pre-bound listening socket must have (None: server binds)."""
    argv, fd = _base_command(settings, spec)
    return argv + [str(arg) for arg in spec.get("extra_args", [])], fd


def _base_command(settings: Settings, spec: dict[str, Any]) -> tuple[list[str], int | None]:
    venv = spec.get("venv", DEFAULT_VENV)
    target = f"{entry_module(spec)}:application"  # the app inside deploykit's adapters (server_environment)
    directory = settings.directory
    server = spec["server"]
    if server == "gunicorn":
        argv = [f"{venv}/bin/gunicorn", "--bind", "fd://3", "--worker-class", spec.get("worker_class", spec["worker"]),
                "--workers", str(settings.processes), "--graceful-timeout", str(settings.graceful_timeout),
                "--timeout", str(max(60, settings.graceful_timeout + 5)), "--worker-tmp-dir", "/tmp",
                "--log-level", "warning", "--chdir", directory]
        if spec["worker"] == "gthread":
            argv += ["--threads", str(settings.threads)]
        if spec["worker"] in ("gthread", "gevent", "eventlet"):
            argv += ["--worker-connections", str(settings.worker_connections)]
        return argv + [target], 3
    if server == "uwsgi":
        socket_option = "--socket" if spec["protocol"] == "uwsgi" else "--http-socket"
        argv = [f"{venv}/bin/uwsgi", "--master", "--need-app", "--strict",
                socket_option, f"{settings.bind}:{settings.port}", "--reuse-port", "--shutdown-sockets",
                "--hook-master-start", "unix_signal:15 gracefully_kill_them_all",
                "--processes", str(settings.processes), "--threads", str(settings.threads),
                "--listen", str(settings.backlog), "--worker-reload-mercy", str(settings.graceful_timeout),
                "--reload-mercy", str(settings.graceful_timeout), "--buffer-size", "32768",
                "--disable-logging", "--log-4xx", "--log-5xx", "--vacuum",
                "--chdir", directory, "--module", target]
        if settings.threads > 1:
            argv.append("--enable-threads")
        return argv, None
    if server == "flup":
        argv = [f"{venv}/bin/python", str(HERE / "deploykit_flup.py"), "--mode", spec["mode"],
                "--processes", str(settings.processes), "--threads", str(settings.threads),
                "--chdir", directory, "--app", target]
        return argv, 0
    if server == "granian":
        interface = spec.get("interface", "wsgi")
        # --backpressure: requests a process takes at once (its default, backlog / workers, took hundreds of
        # connections that a swap must then drain instead of leaving them queued to migrate), as gthread's
        # --worker-connections; granian's own bounds: a backlog of at least 128, a kill timeout up to 1800 s
        argv = [f"{venv}/bin/granian", "--interface", interface, "--host", settings.bind, "--port", str(settings.port),
                "--http", "1", "--workers", str(settings.processes), "--backlog", str(max(128, settings.backlog)),
                "--backpressure", str(settings.worker_connections),
                "--workers-kill-timeout", str(min(1800, settings.graceful_timeout)), "--respawn-failed-workers",
                "--log-level", "warning", "--working-dir", directory]
        if interface == "wsgi":  # an ASGI app's threads are a2wsgi's (deploykit_asgi)
            argv += ["--blocking-threads", str(settings.threads)]
        return argv + [target], None
    if server == "uvicorn":
        argv = [f"{venv}/bin/python", str(HERE / "deploykit_uvicorn.py"), "--processes", str(settings.processes),
                "--graceful-timeout", str(settings.graceful_timeout), "--chdir", directory, "--app", target]
        return argv, 3
    raise ConfigError(f"variant {settings.variant!r} names an unknown server {server!r}")


def check_app(settings: Settings, spec: dict[str, Any], environ: dict[str, str] | None = None) -> None:
    """Load the app as the server will and ask it for its health page, in this process, before anything binds
    the port.
    The kernel hands new connections to a listener at once, and during a reuse-port swap the new container
    shares the port with the old one: a release that cannot load, or that is not healthy, must never listen,
    or users would get its errors (or wait on its queue) until its health gate gives up."""
    env = os.environ if environ is None else environ
    module = entry_module(spec)
    try:
        application = served_app(settings, module)
        from deploykit_wsgi import first_host  # not before: importing it loads the app (served_app sets the path)

        if serves_own_asgi(settings, spec):
            check_connections_under_asgi(kept_database_connections())
        check_health(application, env.get("DEPLOYKIT_HEALTH_PATH", "/health"), first_host(env), module)
    finally:  # no database connection may outlive the check into the server
        from deploykit_wsgi import close_database_connections

        close_database_connections()


def kept_database_connections() -> dict[str, object]:
    """{alias: CONN_MAX_AGE} of the loaded Django settings' databases that keep connections without a pool."""
    if "django.conf" not in sys.modules:
        return {}
    from django.conf import settings as django

    if not django.configured:
        return {}
    return {alias: db.get("CONN_MAX_AGE", 0) for alias, db in django.DATABASES.items()
            if db.get("CONN_MAX_AGE", 0) != 0 and not (db.get("OPTIONS") or {}).get("pool")}


def check_connections_under_asgi(kept: dict[str, object]) -> None:
    """Django served over ASGI runs each request in a context of its own, where a kept connection (CONN_MAX_AGE)
    is never used again nor closed: one per request, until PostgreSQL refuses more and every app on it answers
    500 (measured: 908 of 5,307 requests in one swap). Django's docs: disable persistent connections under
    ASGI. Refused before the port is bound, naming the fix."""
    if kept:
        ages = ", ".join(f"{alias!r}: {age}" for alias, age in kept.items())
        raise UnhealthyApp(f"Django keeps database connections (CONN_MAX_AGE {ages}) and is served over ASGI here, "
                           "where each request would keep one of its own until the database refuses more: set "
                           "CONN_MAX_AGE to 0 or use a pool (OPTIONS pool, Django 5.1+ with psycopg 3), or serve "
                           "its WSGI entry (a WSGI variant, or app.asgi empty in deploykit.yml)")


def served_app(settings: Settings, module: str = "deploykit_wsgi") -> Any:
    """The app as the server will load it (server_environment must be in os.environ): `module`'s (deploykit_wsgi's
    or deploykit_asgi's) `application`, imported with the app's directory as working directory and first on
    sys.path."""
    import importlib

    sys.path.insert(0, settings.directory)
    cwd = os.getcwd()
    os.chdir(settings.directory)
    try:
        return importlib.import_module(module).application
    finally:
        os.chdir(cwd)
        sys.path.remove(settings.directory)


class UnhealthyApp(Exception):
    pass


def check_health(application: Any, path: str, host: str, module: str = "deploykit_wsgi") -> None:
    """GET `path` from the WSGI (or, module deploykit_asgi, ASGI) app itself; anything but a 2xx answer raises
    UnhealthyApp."""
    import importlib

    ask = importlib.import_module(module).ask
    status, body = ask(application, path, host, "deploykit-serve self-check")
    if not status.startswith("2"):
        # one line: the swap's error quotes the last lines of the container's log
        text = body.decode("utf-8", "replace")
        raise UnhealthyApp(f"GET {path} (Host {host}) answered {status or None}: {' '.join(text.split())}")


def bind_reuseport(bind: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((bind, port))
    sock.listen(backlog)
    return sock


def main() -> int:
    try:
        settings = Settings.from_env(dict(os.environ))
        spec = variant_spec(settings, load_variants())
        check_venv(settings, spec)
        argv, fd = server_command(settings, spec)
    except ConfigError as exc:
        print(f"deploykit-serve: {exc}", file=sys.stderr)
        return 64
    os.environ.update(server_environment(settings, spec))
    try:
        check_app(settings, spec)
    except Exception:  # noqa: BLE001 - any failure to import the app: report it and never bind
        import traceback

        traceback.print_exc()
        print(f"deploykit-serve: the app ({settings.target}) cannot be loaded or is not healthy: not binding "
              f"{settings.port}", file=sys.stderr)
        return 70
    if fd is not None:
        sock = bind_reuseport(settings.bind, settings.port, settings.backlog)
        if sock.fileno() != fd:
            os.dup2(sock.fileno(), fd)  # the copy is inheritable; the original closes on exec
        os.set_inheritable(fd, True)
    print(f"deploykit-serve: {settings.variant} ({spec['description']}) for {settings.target} on "
          f"{settings.bind}:{settings.port}, {settings.processes}x{settings.threads}", file=sys.stderr, flush=True)
    os.execv(argv[0], argv)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
