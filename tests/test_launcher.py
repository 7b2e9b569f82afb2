"""deploykit-serve builds each server's command as data: checked without starting anything."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT
from deploy_tool.variants import VARIANTS_FILE
from deploykit_probe import PROTOCOLS
from deploykit_serve import (
    ConfigError,
    Settings,
    UnhealthyApp,
    check_health,
    check_venv,
    load_variants,
    server_command,
    server_environment,
    variant_spec,
)
from deploykit_wsgi import one_context_per_thread, strip_header_whitespace, wrap

VARIANTS = load_variants(ROOT / VARIANTS_FILE)


def command(variant: str, **settings) -> tuple[list[str], int | None]:
    s = Settings(variant=variant, wsgi="app:application", **settings)
    return server_command(s, variant_spec(s, VARIANTS))


def test_the_variants_of_the_field_are_there():
    assert sorted(VARIANTS) == sorted([
        "uwsgi", "uwsgi-http", "gunicorn-sync", "gunicorn-gthread", "gunicorn-gevent", "gunicorn-eventlet",
        "gunicorn-tornado", "gunicorn-uvicorn", "uvicorn", "granian", "granian-asgi", "flup-prefork", "flup-threaded"])
    for name, spec in VARIANTS.items():
        assert spec["protocol"] in PROTOCOLS, name
        assert spec["server"] in ("uwsgi", "gunicorn", "flup", "uvicorn", "granian"), name
        assert spec.get("interface", "wsgi") in ("wsgi", "asgi"), name


def test_the_app_role_brings_its_variant_table_and_no_playbook_needs_a_copy():
    assert not (ROOT / "playbooks" / "group_vars").exists()
    assert yaml.safe_load((ROOT / "roles" / "app" / "vars" / "main" / "variants.yml").read_text())[
        "app_variants"] == VARIANTS


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.startswith("gunicorn")])
def test_gunicorn_serves_a_socket_bound_once_on_fd_3(variant):
    argv, fd = command(variant, processes=3, threads=4, graceful_timeout=25)
    assert fd == 3
    assert argv[argv.index("--bind") + 1] == "fd://3"
    assert "--reuse-port" not in argv  # gunicorn's own would bind a socket per worker
    worker = argv[argv.index("--worker-class") + 1]
    assert worker == {"gunicorn-gevent": "deploykit_workers.GeventWorker",
                      "gunicorn-uvicorn": "deploykit_uvicorn.UvicornWorker",
                      "gunicorn-eventlet": "deploykit_workers.EventletWorker",
                      "gunicorn-tornado": "deploykit_workers.TornadoWorker"}.get(variant, VARIANTS[variant]["worker"])
    assert argv[argv.index("--graceful-timeout") + 1] == "25"
    assert ("--threads" in argv) == (variant == "gunicorn-gthread")
    assert argv[0].startswith(VARIANTS[variant].get("venv", "/opt/venv"))


def test_eventlet_runs_from_its_own_venv():
    argv, _ = command("gunicorn-eventlet")
    assert argv[0] == "/opt/venv-eventlet/bin/gunicorn"
    assert "--no-control-socket" not in argv  # gunicorn 25 has no such option


def test_gunicorn_27_runs_without_its_control_socket():
    argv, _ = command("gunicorn-sync")
    assert argv[-1] == "--no-control-socket"


@pytest.mark.parametrize("variant, option", [("uwsgi", "--socket"), ("uwsgi-http", "--http-socket")])
def test_uwsgi_stops_gracefully_on_term(variant, option):
    argv, fd = command(variant, port=9000, processes=3, threads=3)
    assert fd is None
    assert argv[argv.index(option) + 1] == "127.0.0.1:9000"
    assert "--http" not in argv  # the router process is killed brutally
    for flag in ("--master", "--reuse-port", "--shutdown-sockets", "--enable-threads"):
        assert flag in argv
    assert argv[argv.index("--hook-master-start") + 1] == "unix_signal:15 gracefully_kill_them_all"
    assert (argv[argv.index("--processes") + 1], argv[argv.index("--threads") + 1]) == ("3", "3")


@pytest.mark.parametrize("variant, mode", [("flup-prefork", "prefork"), ("flup-threaded", "threaded")])
def test_flup_gets_its_socket_on_fd_0(variant, mode):
    argv, fd = command(variant)
    assert fd == 0
    assert argv[argv.index("--mode") + 1] == mode
    assert argv[argv.index("--app") + 1] == "deploykit_wsgi:application"
    assert argv[argv.index("--chdir") + 1] == "/opt/app"  # where `deploy build` puts the app


def test_uvicorn_alone_serves_the_socket_bound_once_on_fd_3_through_deploykits_runner():
    argv, fd = command("uvicorn", processes=3, graceful_timeout=25)
    assert fd == 3
    assert argv[1].endswith("/deploykit_uvicorn.py")  # its stop closes the listener in every process
    assert argv[argv.index("--processes") + 1] == "3"
    assert argv[argv.index("--graceful-timeout") + 1] == "25"
    assert argv[argv.index("--app") + 1] == "deploykit_asgi:application"


def test_gunicorn_runs_uvicorn_workers_on_the_asgi_app():
    argv, fd = command("gunicorn-uvicorn")
    assert fd == 3
    assert argv[argv.index("--worker-class") + 1] == "deploykit_uvicorn.UvicornWorker"  # its stop: see there
    assert "deploykit_asgi:application" in argv


@pytest.mark.parametrize("variant", [v for v in VARIANTS if VARIANTS[v].get("interface") == "asgi"])
def test_an_asgi_server_serves_the_apps_own_asgi_entry_or_else_its_wsgi_app(variant):
    spec = VARIANTS[variant]
    native = server_environment(Settings(variant=variant, wsgi="mysite.wsgi:application",
                                         asgi="mysite.asgi:application"), spec)
    assert native["DEPLOYKIT_ASGI_TARGET"] == "mysite.asgi:application"
    assert "DEPLOYKIT_WSGI_TARGET" not in native
    adapted = server_environment(Settings(variant=variant, wsgi="mysite.wsgi:application"), spec)
    assert adapted["DEPLOYKIT_WSGI_TARGET"] == "mysite.wsgi:application"
    assert "DEPLOYKIT_ASGI_TARGET" not in adapted
    # a WSGI server never takes the ASGI entry, even when the image names one
    wsgi_only = server_environment(Settings(variant="gunicorn-sync", wsgi="mysite.wsgi:application",
                                            asgi="mysite.asgi:application"), VARIANTS["gunicorn-sync"])
    assert wsgi_only["DEPLOYKIT_WSGI_TARGET"] == "mysite.wsgi:application"
    assert "DEPLOYKIT_ASGI_TARGET" not in wsgi_only


def test_an_asgi_app_answers_marked_and_is_asked_in_process(monkeypatch):
    import asyncio

    import deploykit_asgi

    monkeypatch.setenv("DEPLOYKIT_INSTANCE", "c0ffee")
    monkeypatch.setenv("DEPLOYKIT_RELEASE", "1.2.3")
    seen = {}

    async def app(scope, receive, send):
        seen["path"], seen["query"] = scope["path"], scope["query_string"]
        assert (await receive())["type"] == "http.request"
        waiting = asyncio.ensure_future(receive())  # as Django listens for the client's disconnect meanwhile
        await asyncio.sleep(0.01)
        assert not waiting.done(), "the client left before its answer"
        await send({"type": "http.response.start", "status": 503 if scope["path"] == "/down" else 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok ", "more_body": True})
        await send({"type": "http.response.body", "body": b"then"})
        if scope.get("headers"):  # the in-process ask: the client leaves once answered
            assert (await waiting)["type"] == "http.disconnect"

    marked = deploykit_asgi.mark_answers(app)
    assert deploykit_asgi.ask(marked, "/health?deep=1", "demo.lab", "test") == ("200", b"ok then")
    assert seen == {"path": "/health", "query": b"deep=1"}
    headers = []

    async def send(message):
        headers.extend(message.get("headers", []))

    async def receive():
        await asyncio.sleep(0.02)
        return {"type": "http.request", "body": b""}

    asyncio.run(marked({"type": "http", "path": "/", "query_string": b""}, receive, send))
    assert (b"x-deploykit-instance", b"c0ffee") in headers and (b"x-deploykit-release", b"1.2.3") in headers
    with pytest.raises(UnhealthyApp, match="GET /down .*answered 503"):
        check_health(marked, "/down", "demo.lab", "deploykit_asgi")


def test_a2wsgi_requests_run_in_threads_that_an_exit_does_not_wait_for():
    """granian's ASGI worker may stop its loop while a2wsgi's thread still hands it the closing empty body:
    the thread then waits for ever. With deploykit_asgi's pool the worker's exit goes on; with a
    ThreadPoolExecutor (a2wsgi's own) it waited until granian killed it."""
    import asyncio
    import subprocess
    import sys

    from deploykit_asgi import DaemonThreads

    async def run() -> list[object]:
        pool, loop = DaemonThreads(2), asyncio.get_running_loop()
        answers: list[object] = [await loop.run_in_executor(pool, pow, 2, 10)]
        try:
            await loop.run_in_executor(pool, int, "not a number")
        except ValueError as exc:
            answers.append(type(exc))
        return answers

    assert asyncio.run(run()) == [1024, ValueError]
    stuck = ("import threading, sys; sys.path.insert(0, {launcher!r}); from {module} import {pool}; "
             "{pool}(1).submit(threading.Event().wait); print('exiting', flush=True)")
    launcher = str(ROOT / "apps" / "launcher")
    exited = subprocess.run([sys.executable, "-c", stuck.format(launcher=launcher, module="deploykit_asgi",
                                                                 pool="DaemonThreads")],
                            capture_output=True, text=True, timeout=20)
    assert (exited.returncode, exited.stdout) == (0, "exiting\n"), exited.stderr
    with pytest.raises(subprocess.TimeoutExpired):  # a2wsgi's own pool: the exit waits for the stuck thread
        subprocess.run([sys.executable, "-c", stuck.format(launcher=launcher, module="concurrent.futures",
                                                            pool="ThreadPoolExecutor")],
                       capture_output=True, timeout=3)


def test_django_kept_connections_are_refused_under_asgi_naming_the_setting():
    from deploykit_serve import check_connections_under_asgi

    check_connections_under_asgi({})
    with pytest.raises(UnhealthyApp, match="CONN_MAX_AGE 'default': 60.*set CONN_MAX_AGE to 0 or use a pool"):
        check_connections_under_asgi({"default": 60})


def test_an_asgi_entry_that_is_not_module_attribute_is_refused():
    with pytest.raises(ConfigError, match="DEPLOYKIT_ASGI must be module:attribute"):
        Settings.from_env({"DEPLOYKIT_VARIANT": "uvicorn", "DEPLOYKIT_WSGI": "app:application",
                           "DEPLOYKIT_ASGI": "mysite/asgi.py"})


@pytest.mark.parametrize("variant, interface", [("granian", "wsgi"), ("granian-asgi", "asgi")])
def test_granian_binds_its_own_reuse_port_sockets_and_respawns_a_failed_worker(variant, interface):
    argv, fd = command(variant, port=9000, processes=3, threads=4, graceful_timeout=25)
    assert fd is None  # granian sets SO_REUSEPORT on each worker's socket itself
    assert (argv[argv.index("--host") + 1], argv[argv.index("--port") + 1]) == ("127.0.0.1", "9000")
    assert argv[argv.index("--interface") + 1] == interface
    assert argv[argv.index("--workers") + 1] == "3"
    assert argv[argv.index("--workers-kill-timeout") + 1] == "25"
    assert "--respawn-failed-workers" in argv  # else one worker's crash stops them all
    assert argv[argv.index("--backpressure") + 1] == "100"  # worker_connections, not backlog / workers
    bounded, _ = command(variant, backlog=64, graceful_timeout=3600)  # what deploykit allows, granian refuses
    assert (bounded[bounded.index("--backlog") + 1], bounded[bounded.index("--workers-kill-timeout") + 1]) \
        == ("128", "1800")
    # WSGI: the app's threads are granian's; ASGI: a2wsgi's (deploykit_asgi), granian allows one
    assert ("--blocking-threads" in argv) == (interface == "wsgi")
    assert argv[-1] == f"deploykit_{interface}:application"


@pytest.mark.parametrize("env, message", [
    ({"DEPLOYKIT_PORT": "http"}, "DEPLOYKIT_PORT must be a whole number"),
    ({"DEPLOYKIT_PROCESSES": "0"}, "DEPLOYKIT_PROCESSES must be between 1 and 256"),
    ({"DEPLOYKIT_WSGI": ""}, "DEPLOYKIT_WSGI must be module:attribute or module:factory.*deploy build"),
    ({"DEPLOYKIT_WSGI": "mysite.wsgi"}, "DEPLOYKIT_WSGI must be module:attribute or module:factory"),
])
def test_bad_settings_are_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"DEPLOYKIT_VARIANT": "uwsgi", "DEPLOYKIT_WSGI": "app:application", **env})


def test_a_variant_with_a_venv_the_image_has_not_is_refused_naming_the_build_key(tmp_path):
    settings = Settings(variant="gunicorn-eventlet", wsgi="app:application")
    with pytest.raises(ConfigError, match="build.eventlet: true"):
        check_venv(settings, {**VARIANTS["gunicorn-eventlet"], "venv": str(tmp_path / "venv-eventlet")})
    (tmp_path / "venv-eventlet" / "bin").mkdir(parents=True)
    (tmp_path / "venv-eventlet" / "bin" / "python").touch()
    check_venv(settings, {**VARIANTS["gunicorn-eventlet"], "venv": str(tmp_path / "venv-eventlet")})


def test_unknown_variant_is_refused():
    with pytest.raises(ConfigError, match="DEPLOYKIT_VARIANT must be one of"):
        variant_spec(Settings(variant="mod_wsgi", wsgi="app:application"), VARIANTS)


def test_tornado_wraps_the_app_to_strip_header_whitespace():
    settings = Settings(variant="gunicorn-tornado", wsgi="demo.wsgi:application")
    spec = variant_spec(settings, VARIANTS)
    argv, _ = server_command(settings, spec)
    assert "deploykit_wsgi:application" in argv
    env = server_environment(settings, spec)
    assert env["DEPLOYKIT_WSGI_TARGET"] == "demo.wsgi:application"
    assert env["DEPLOYKIT_WSGI_WRAP"] == "mark_answers,one_context_per_thread,strip_header_whitespace"
    assert env["DJANGO_ALLOW_ASYNC_UNSAFE"] == "true"
    assert server_environment(Settings(variant="gunicorn-sync", wsgi="app:application"),
                              VARIANTS["gunicorn-sync"])["DEPLOYKIT_WSGI_WRAP"] \
        == "mark_answers"


def test_an_app_built_from_its_deploykit_yml_is_served_from_its_own_directory():
    """An app of the user's: DEPLOYKIT_WSGI names its entry (an app factory here), /opt/app holds its code;
    every server runs it inside deploykit_wsgi from that directory."""
    settings = Settings.from_env({"DEPLOYKIT_VARIANT": "uwsgi", "DEPLOYKIT_WSGI": "flaskr:create_app()"})
    assert (settings.target, settings.directory) == ("flaskr:create_app()", "/opt/app")
    for variant in ("uwsgi", "gunicorn-gthread", "flup-threaded"):
        spec = variant_spec(settings, VARIANTS)
        argv, _ = server_command(Settings.from_env({"DEPLOYKIT_VARIANT": variant,
                                                    "DEPLOYKIT_WSGI": "flaskr:create_app()"}), VARIANTS[variant])
        assert argv[argv.index("--chdir") + 1] == "/opt/app", variant
        assert "deploykit_wsgi:application" in argv, variant
    env = server_environment(settings, spec)
    assert env["DEPLOYKIT_WSGI_TARGET"] == "flaskr:create_app()"
    assert env["PYTHONPATH"].split(":") == [str(ROOT / "apps" / "launcher"), "/opt/app"]


def test_every_answer_names_its_container_and_release_and_a_factory_is_called_once(tmp_path, monkeypatch):
    import sys

    import deploykit_wsgi

    (tmp_path / "factory_app.py").write_text(
        "calls = []\n"
        "def create_app():\n"
        "    calls.append(1)\n"
        "    def app(environ, start_response):\n"
        "        start_response('204 No Content', [('X-App', 'mine')])\n"
        "        return [b'']\n"
        "    return app\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DEPLOYKIT_INSTANCE", "app-1.2.0-abc")
    monkeypatch.setenv("DEPLOYKIT_RELEASE", "1.2.0")
    app = deploykit_wsgi.wrap(deploykit_wsgi.load("factory_app:create_app()"), "mark_answers")
    seen = []
    app({}, lambda status, headers, exc_info=None: seen.append((status, headers)))
    assert seen == [("204 No Content", [("X-App", "mine"), ("X-Deploykit-Instance", "app-1.2.0-abc"),
                                        ("X-Deploykit-Release", "1.2.0")])]
    assert sys.modules["factory_app"].calls == [1]


def test_strip_header_whitespace_adapter():
    def django_like(environ, start_response):
        start_response("200 OK", [("Set-Cookie", " csrftoken=abc; Path=/"), ("Content-Type", "text/html")])
        return [b"ok"]

    seen = []
    body = strip_header_whitespace(django_like)({}, lambda status, headers, exc_info=None: seen.append(headers))
    assert body == [b"ok"]
    assert seen == [[("Set-Cookie", "csrftoken=abc; Path=/"), ("Content-Type", "text/html")]]


def test_one_context_per_thread_keeps_context_locals_across_requests_in_fresh_tasks():
    """As tornado's WSGIContainer does: each request in a new asyncio task (a copy of the context). An app
    that keeps a resource in a context variable (as Django its database connection) opens one per request
    without the adapter, and one in all with it, seen again by the response's close()."""
    import asyncio
    import contextvars

    def app_with_a_context_local():
        connection = contextvars.ContextVar("connection")
        opened, closed_by = [], []

        class Body(list):
            def close(self):
                closed_by.append(connection.get(None))

        def app(environ, start_response):
            if connection.get(None) is None:
                opened.append(object())
                connection.set(opened[-1])
            start_response("200 OK", [])
            return Body([b"ok"])

        return app, opened, closed_by

    async def serve(app, requests):
        async def one():
            body = app({}, lambda status, headers, exc_info=None: None)
            assert b"".join(body) == b"ok"
            body.close()

        for _ in range(requests):
            await asyncio.get_running_loop().create_task(one())

    bare, opened, _ = app_with_a_context_local()
    asyncio.run(serve(bare, 5))
    assert len(opened) == 5  # the leak: a "connection" per request

    app, opened, closed_by = app_with_a_context_local()
    asyncio.run(serve(wrap(app, "one_context_per_thread, strip_header_whitespace"), 5))
    assert len(opened) == 1
    assert closed_by == opened * 5  # close() ran where the call ran: Django's request_finished sees it


def test_wrap_nests_adapters_outermost_first():
    def app(environ, start_response):
        start_response("200 OK", [("X", " y")])
        return [b"ok"]

    seen = []
    body = wrap(app, "one_context_per_thread,strip_header_whitespace")({}, lambda s, h, e=None: seen.append(h))
    assert list(body) == [b"ok"] and seen == [[("X", "y")]]
    assert one_context_per_thread(app)({}, lambda s, h, e=None: None).close() is None


def test_the_launcher_asks_the_app_for_its_health_before_binding():
    import deploykit_serve

    seen = {}

    def app(environ, start_response):
        seen.update(path=environ["PATH_INFO"], host=environ["HTTP_HOST"])
        healthy = environ["PATH_INFO"] == "/health"
        start_response("200 OK" if healthy else "503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"ok" if healthy else b"database down"]

    deploykit_serve.check_health(app, "/health", "demo.lab")
    assert seen == {"path": "/health", "host": "demo.lab"}
    with pytest.raises(deploykit_serve.UnhealthyApp, match="503 Service Unavailable: database down"):
        deploykit_serve.check_health(app, "/ready", "demo.lab")

    def html_404(environ, start_response):
        start_response("404 NOT FOUND", [("Content-Type", "text/html")])
        return [b"<!doctype html>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"]

    with pytest.raises(deploykit_serve.UnhealthyApp) as unhealthy:  # one line, for the swap's error to quote
        deploykit_serve.check_health(html_404, "/health", "demo.lab")
    assert str(unhealthy.value) == ("GET /health (Host demo.lab) answered 404 NOT FOUND: <!doctype html> "
                                    "<title>404 Not Found</title> <h1>Not Found</h1>")


def test_greenlet_workers_find_their_own_module():
    s = Settings(variant="gunicorn-gevent", wsgi="app:application")
    path = server_environment(s, variant_spec(s, VARIANTS))["PYTHONPATH"]
    assert path.split(":")[0] == str(ROOT / "apps" / "launcher")


def test_a_fixed_async_worker_hands_its_handlers_the_listener_name_after_the_listener_closed():
    """gunicorn's async handlers ask the listener for its name; the stop may have closed it by then."""
    import socket

    import deploykit_workers

    class Base:  # what gunicorn's base classes do, in short
        def __init__(self, sockets):
            self.sockets = sockets
            self.names = []

        def init_process(self):
            pass

        def handle(self, listener, client, addr):
            self.names.append(listener.getsockname())

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    name = listener.getsockname()
    worker = deploykit_workers.with_known_listener_name(Base)([listener])
    worker.init_process()
    listener.close()  # the graceful stop
    with pytest.raises(OSError):
        Base([listener]).handle(listener, None, None)  # gunicorn's own handler fails here (EBADF)
    worker.handle(listener, None, None)
    assert worker.names == [name]
    with pytest.raises(AttributeError):
        deploykit_workers.NoSuchWorker  # noqa: B018


def test_a_sliced_sleep_ends_soon_after_the_stop_and_is_the_library_otherwise():
    import time

    import deploykit_workers

    class Library:
        sleep = staticmethod(time.sleep)
        Timeout = "the library's Timeout"

    state = {"alive": True}
    sliced = deploykit_workers.SlicedSleep(Library, lambda: not state["alive"])
    assert sliced.Timeout == "the library's Timeout"
    began = time.monotonic()
    sliced.sleep(0.3)
    assert time.monotonic() - began >= 0.3  # alive: the whole sleep
    import threading

    threading.Timer(0.2, lambda: state.update(alive=False)).start()  # the stop signal, in the middle of a sleep
    began = time.monotonic()
    sliced.sleep(5.0)
    assert 0.2 <= time.monotonic() - began < 1.0  # it ended a slice after the stop, not 5 s later
    began = time.monotonic()
    sliced.sleep(5.0)
    assert time.monotonic() - began < 1.0  # stopping: one slice


def test_warm_up_asks_the_app_for_each_path_in_process_and_a_failing_path_does_not_stop_it(capsys):
    import deploykit_wsgi

    seen = []

    def app(environ, start_response):
        seen.append((environ["PATH_INFO"], environ["QUERY_STRING"], environ["HTTP_HOST"]))
        if environ["PATH_INFO"] == "/broken/":
            raise RuntimeError("no template")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    deploykit_wsgi.warm_up(app, "/, /broken/,/polls/?page=2,", "demo.lab")
    assert seen == [("/", "", "demo.lab"), ("/broken/", "", "demo.lab"), ("/polls/", "page=2", "demo.lab")]
    said = capsys.readouterr().err.splitlines()
    assert said[0].startswith("deploykit: warm-up GET /: 200 OK (")
    assert said[1].startswith("deploykit: warm-up GET /broken/: failed: RuntimeError: no template")
    assert len(said) == 3


def test_a_variant_the_images_launcher_lacks_is_refused_on_the_controller():
    from deploy_tool.errors import DeployError
    from deploy_tool.variants import IMAGE_LABEL, check_image_serves

    older = {IMAGE_LABEL: "uwsgi,gunicorn-sync,gunicorn-gthread"}  # an image built before the ASGI servers
    check_image_serves("deploykit/app:1.0", older, "gunicorn-sync")
    with pytest.raises(DeployError, match="deploykit/app:1.0 .* serves uwsgi, gunicorn-sync, gunicorn-gthread, "
                                          "not uvicorn") as refused:
        check_image_serves("deploykit/app:1.0", older, "uvicorn")
    assert "--rebuild" in refused.value.hint
    check_image_serves("deploykit/app:0.9", {}, "uvicorn")  # no label (built before it): the host's launcher judges


def test_the_check_before_binding_loads_the_app_from_its_own_directory(tmp_path, monkeypatch):
    """As in a fresh launcher process: nothing of deploykit_wsgi loaded yet, the app importable only from its
    directory (which served_app puts first on sys.path): the check finds it and its health page answers."""
    import sys

    from deploykit_serve import check_app

    (tmp_path / "checked_app.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [environ['PATH_INFO'].encode()]\n")
    settings = Settings(variant="gunicorn-sync", wsgi="checked_app:application", app_dir=str(tmp_path))
    for name, value in server_environment(settings, VARIANTS["gunicorn-sync"]).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delitem(sys.modules, "deploykit_wsgi")  # restored after the test
    monkeypatch.delitem(sys.modules, "checked_app", raising=False)
    check_app(settings, VARIANTS["gunicorn-sync"], {})
    assert sys.modules["checked_app"].__file__ == str(tmp_path / "checked_app.py")
