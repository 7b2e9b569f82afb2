"""The benchmark side without a fleet: the gate's verdicts, the smoke history, the benchmark module's two
engines against a real HTTP server on loopback, the swap-window report and the matrix entries."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import LOAD_CLIENT, ROOT
from conftest import run_module as run_conftest_module
from deploy_tool import appspec
from deploy_tool.bench import BenchLoad, Gate, SmokeRecord, SmokeStore, check_client, fleet_totals, format_table
from deploy_tool.cpus import cpu_set, cpu_text
from deploy_tool.errors import DeployError
from deploy_tool.lab import validate_cpus
from deploy_tool.matrix import parse_entries, progress_bar
from deploy_tool.project import Project
from deploy_tool.report import swap_marks, write_report


def result(rps: float, p90: float = 10.0, failed: int = 0) -> dict:
    return {"rps": rps, "failed": failed, "errors": {"status": failed} if failed else {}, "p50_ms": p90 / 2,
            "p90_ms": p90, "p99_ms": p90 * 2, "max_ms": p90 * 3}


def test_gate_passes_a_release_within_the_threshold():
    gate = Gate(threshold=50)
    assert gate.findings({"h1": result(60, 14)}, {"h1": result(100, 10)}) == []


def test_gate_fails_on_lost_throughput_on_a_host():
    findings = Gate(threshold=50).findings({"h1": result(100), "h2": result(20, 10)},
                                           {"h1": result(100), "h2": result(100, 10)})
    assert len(findings) == 1 and findings[0].startswith("h2: 20 req/s, 80% below 100")


def test_gate_fails_on_latency_and_on_any_failed_request():
    findings = Gate(threshold=50).findings({"h1": result(100, 40), "h2": result(100, 10, failed=1)},
                                           {"h1": result(100, 10), "h2": result(100, 10)})
    assert [f.split(":")[0] for f in findings] == ["h1", "h2"]
    assert "p90 40" in findings[0] and "1 failed requests" in findings[1]


def test_gate_without_a_baseline_judges_failures_only():
    assert Gate().findings({"h1": result(1)}, None) == []
    assert Gate().findings({"h1": result(1, failed=3)}, None) != []


def test_gate_on_failures_only_shows_a_slower_release_but_stops_a_failing_one():
    gate = Gate(threshold=50, failures_only=True)
    baseline = {"h1": result(100, 10), "h2": result(100, 10)}
    assert gate.findings({"h1": result(5, 900), "h2": result(100, 10)}, baseline) == []
    findings = gate.findings({"h1": result(5, 900), "h2": result(100, 10, failed=2)}, baseline)
    assert len(findings) == 1 and findings[0].startswith("h2: 2 failed requests")


def test_a_host_that_answered_nothing_fails_the_gate_even_on_failures_only():
    silent = {**result(0.0), "requests": 0}
    for gate in (Gate(), Gate(failures_only=True)):
        findings = gate.findings({"h1": {**result(100), "requests": 500}, "h2": silent}, None)
        assert len(findings) == 1 and findings[0].startswith("h2: answered no request"), findings


def test_bad_bench_options_are_refused():
    for load in (BenchLoad(engine="ab"), BenchLoad(duration=0), BenchLoad(path="health")):
        with pytest.raises(DeployError):
            load.validate()
    with pytest.raises(DeployError):
        Gate(threshold=0).validate()


def test_the_client_is_on_the_host_or_on_the_controller_with_cpus_it_has():
    usable = sorted(os.sched_getaffinity(0))
    pinned = BenchLoad.from_options({"client": "controller", "client_cpus": str(usable[-1])})
    pinned.validate()
    assert pinned.extravars()["bench_client"] == "controller"
    assert pinned.extravars()["bench_client_cpus"] == str(usable[-1])
    assert pinned.label().endswith(f"from the controller on CPUs {usable[-1]}") and not pinned.from_host
    assert BenchLoad().from_host and not BenchLoad(engine="locust").from_host
    for load, said in ((BenchLoad(client="vm"), "unknown benchmark client"),
                       (BenchLoad(client_cpus="0"), "it takes --client controller"),
                       (BenchLoad(engine="locust", client="controller", client_cpus="0"), "with wrk or rate"),
                       (BenchLoad(client="controller", client_cpus="0-"), "not a CPU list"),
                       (BenchLoad(client="controller", client_cpus="1-0"), "runs backwards"),
                       (BenchLoad(client="controller", client_cpus=str(usable[-1] + 1)), "offers the client CPUs")):
        with pytest.raises(DeployError, match=said):
            load.validate()


def test_what_a_load_from_the_controller_cannot_measure_is_refused(tmp_path):
    folder = tmp_path / "app"
    shutil.copytree(ROOT / "apps" / "flask_demo", folder, ignore=shutil.ignore_patterns("__pycache__", "secrets.yml"))
    plain = appspec.load(folder)
    (folder / "deploykit.yml").write_text((folder / "deploykit.yml").read_text() + "tls:\n  source: self-signed\n")
    https = appspec.load(folder)
    controller = BenchLoad(client="controller")
    check_client(controller, plain, direct=False)
    check_client(BenchLoad(client="controller", engine="rate"), https, direct=False)  # it sends the app's name
    check_client(BenchLoad(engine="locust"), plain, direct=True)  # locust leaves the direct target out, as before
    with pytest.raises(DeployError, match="has HTTPS: wrk from the controller"):
        check_client(controller, https, direct=False)
    with pytest.raises(DeployError, match="listens on each host's loopback"):
        check_client(controller, None, direct=True)


def test_cpu_lists_read_and_written_as_taskset_and_cpuset_take_them():
    assert cpu_set("0,2-4,7") == {0, 2, 3, 4, 7} and cpu_text({0, 2, 3, 4, 7}) == "0,2-4,7"
    assert cpu_text(cpu_set("3-3,1")) == "1,3"
    assert validate_cpus("1", 2) == "1" and validate_cpus("0-1", 2) == "all" and validate_cpus(None, 2) is None
    for bad, said in (("2", "this machine has CPUs 0-1"), ("a", "not a CPU list"), ("", "not a CPU list")):
        with pytest.raises(DeployError, match=said):
            validate_cpus(bad, 2)


def test_smoke_baseline_is_the_last_passed_comparable_release(tmp_path):
    project = Project(root=tmp_path)
    store = SmokeStore(project, tmp_path / "inventory")
    load = vars(BenchLoad()).copy()
    store.save(SmokeRecord("1.0", "uwsgi", "django", load, {"h1": result(100)}))
    store.save(SmokeRecord("1.1", "uwsgi", "django", load, {"h1": result(90)}))
    store.save(SmokeRecord("1.2", "uwsgi", "django", load, {"h1": result(10)}, verdict="regressed"))
    store.save(SmokeRecord("1.3", "gunicorn-sync", "django", load, {"h1": result(50)}))
    store.save(SmokeRecord("1.4", "uwsgi", "django", load, {}))  # a smoke that measured nothing
    new = SmokeRecord("1.5", "uwsgi", "django", load, {"h1": result(95)})
    assert store.baseline(new).release == "1.1"
    assert json.loads(store.path("django", "1.1").read_text())["hosts"]["h1"]["rps"] == 90
    other_load = SmokeRecord("1.5", "uwsgi", "django", vars(BenchLoad(connections=64)).copy(), {})
    assert store.baseline(other_load) is None
    before_client = {k: v for k, v in load.items() if k not in ("client", "client_cpus")}  # kept before they were
    assert store.baseline(SmokeRecord("1.5", "uwsgi", "django", before_client, {})).release == "1.1"
    from_controller = vars(BenchLoad(client="controller")).copy()
    assert store.baseline(SmokeRecord("1.5", "uwsgi", "django", from_controller, {})) is None
    with (store.folder / "history.jsonl").open("a") as history:  # damaged lines are skipped, not a traceback
        history.write('{"release": "1.6", "vari\n{"release": "1.7"}\n')
    assert store.baseline(new).release == "1.1"


def test_format_table_has_a_row_per_host_and_na_for_missing():
    lines = format_table([("h1", result(123.4)), ("h2", None)])
    assert lines[0].split()[:3] == ["host", "rps", "failed"]
    assert lines[1].split()[:3] == ["h1", "123.4", "0"]
    assert lines[2].split() == ["h2"] + ["n/a"] * 6


class Slow(http.server.BaseHTTPRequestHandler):
    """Answers after 50 ms; /fail answers 500."""
    protocol_version = "HTTP/1.1"
    delay = 0.05

    def do_GET(self):  # noqa: N802 - the http.server API
        time.sleep(self.delay)
        status = 500 if self.path == "/fail" else 200
        body = f"host={self.headers['Host']}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def slow_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run_module(args: dict) -> dict:
    """library/deploykit_bench.py, run as Ansible runs it."""
    return run_conftest_module("deploykit_bench", args, ("deploykit_load", "deploykit_bench"))


def test_rate_engine_holds_the_rate_and_counts_from_the_due_time(slow_server):
    out = run_module({"url": f"{slow_server}/", "engine": "rate", "rate": 40, "duration": 2, "connections": 4})
    assert out["failures"] == 0 and out["requests"] == 80
    assert out["rps"] <= 42
    assert out["p50_ms"] >= 50  # the server's 50 ms
    # one connection cannot carry 40 req/s at 50 ms each: requests queue, and their wait counts
    starved = run_module({"url": f"{slow_server}/", "engine": "rate", "rate": 40, "duration": 2, "connections": 1})
    assert starved["p90_ms"] > 500


def test_rate_engine_counts_error_answers(slow_server):
    out = run_module({"url": f"{slow_server}/fail", "engine": "rate", "rate": 20, "duration": 1, "connections": 2})
    assert out["failures"] == out["requests"] == 20 and out["errors"] == {"status": 20}
    assert "failed" not in out  # an Ansible task would read it as its own failure


def test_wrk_engine_reports_its_summary(slow_server):
    out = run_module({"url": f"{slow_server}/", "duration": 2, "connections": 4, "threads": 2})
    assert out["engine"] == "wrk" and out["failures"] == 0
    assert out["requests"] > 20 and out["p50_ms"] >= 50


def wrk_cpus_seen(stop: threading.Event, seen: set[str]) -> None:
    """The CPU lists (/proc/PID/status Cpus_allowed_list) of the wrk processes that run until `stop`."""
    while not stop.is_set():
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            if text.startswith("Name:\twrk\n"):
                seen.add(text.split("Cpus_allowed_list:\t", 1)[1].split("\n", 1)[0])
        time.sleep(0.1)


def test_the_client_runs_on_the_cpus_given(slow_server):
    last = max(os.sched_getaffinity(0))
    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=wrk_cpus_seen, args=(stop, seen), daemon=True)
    watcher.start()
    try:
        out = run_module({"url": f"{slow_server}/", "duration": 2, "connections": 4, "cpus": str(last)})
    finally:
        stop.set()
        watcher.join()
    assert out["failures"] == 0 and out["requests"] > 20 and out["cpus"] == [last]
    assert seen == {str(last)}  # wrk itself, not only the module's process
    unpinned = run_module({"url": f"{slow_server}/", "engine": "rate", "rate": 20, "duration": 1, "connections": 2})
    assert unpinned["cpus"] == sorted(os.sched_getaffinity(0))


def test_bench_module_refuses_bad_arguments():
    out = run_module({"url": "ftp://x/", "engine": "rate"})
    assert out["failed"] is True and "http:// or https:// URL" in out["msg"]
    out = run_module({"url": "http://127.0.0.1:1/", "connections": 1, "threads": 4})
    assert out["failed"] is True and "threads" in out["msg"]
    for cpus, said in (("1-0", "runs backwards"), ("x", "CPU list"), ("0-", "CPU list"), ("0,,1", "CPU list"),
                       ("\u00b2", "CPU list"), ("4096", "does not offer the client: [4096]")):
        out = run_module({"url": "http://127.0.0.1:1/", "cpus": cpus})
        assert out["failed"] is True and said in out["msg"], out


def test_swap_report_marks_each_host_and_writes_html_and_png(tmp_path):
    project = Project(root=tmp_path)
    load = {"requests": 300, "failures": 0, "errors": {}, "rps": 100.0, "p50_ms": 2.0, "p99_ms": 9.0, "max_ms": 12.0,
            "started_at": 1000.0,
            "buckets": [{"second": s, "requests": 100, "failures": 0, "p50_ms": 2.0, "p99_ms": 9.0} for s in range(3)]}
    swaps = {"h1": {"started_at": 1000.5, "timings": {"started": 0.2, "healthy": 1.0, "old_stopped": 1.4}},
             "h2": {"changed": False}}
    assert swap_marks(swaps, 1000.0) == [{"host": "h1", "step": "healthy", "second": 1.5},
                                         {"host": "h1", "step": "old_stopped", "second": 1.9}]
    page = write_report(project, "deploy", "1.2.3", load, swaps, ["host rps"])
    text = page.read_text()
    assert "deploy 1.2.3: 300 requests, 0 failed" in text and 'src="swap.png"' in text and "old stopped" in text
    png = (page.parent / "swap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1000, 600)
    assert json.loads((page.parent / "swap.json").read_text())["marks"][0]["host"] == "h1"


def test_matrix_entries_and_fleet_totals():
    project = Project.locate()
    entries = parse_entries(project, None)
    labels = [e.label for e in entries]
    assert "gunicorn-eventlet" in labels and "flup-threaded" in labels and "uwsgi 3x3" in labels
    assert parse_entries(project, "uwsgi:2x8")[0].threads == 8
    for bad in ("nope", "uwsgi:0x1", "uwsgi:3", "uwsgi:99x99", "uwsgi:2x65"):
        with pytest.raises(DeployError):
            parse_entries(project, bad)
    totals = fleet_totals({"h1": result(100, 10), "h2": result(50, 30, failed=2)})
    assert totals["rps"] == 150 and totals["failed"] == 2 and totals["p90_ms"] == 30
    assert progress_bar(1, 4, width=8) == "[##......] 1/4"


def test_loadgen_rate_paces_the_requests(slow_server):
    out = subprocess.run([sys.executable, str(LOAD_CLIENT), "--url", f"{slow_server}/", "--concurrency", "4",
                          "--rate", "20", "--duration", "2", "--json"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    summary = json.loads(out.stdout)
    assert 10 <= summary["requests"] <= 44 and summary["failures"] == 0  # paced: unpaced, 4 workers do ~150
    assert abs(summary["started_at"] - time.time()) < 30


def test_project_locate_is_this_checkout():
    assert Project.locate().root == Path(ROOT)


def test_loadgen_sends_again_once_when_a_kept_alive_connection_was_closed_under_it():
    """A server that answers with keep-alive, then closes the connection (as nginx closes idle connections when
    it reloads): the next request on that connection gets no answer and goes again on a new one."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
                time.sleep(0.01)  # then closed, unannounced

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        out = subprocess.run([sys.executable, str(LOAD_CLIENT), "--url",
                              f"http://127.0.0.1:{listener.getsockname()[1]}/", "--concurrency", "2", "--rate", "20",
                              "--duration", "1.5", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        stop.set()
        thread.join()
        listener.close()
    summary = json.loads(out.stdout)
    assert summary["failures"] == 0, summary["errors"]
    assert summary["retried"] > 0  # the kept-alive worker's second and later requests


def test_locust_stats_become_one_summary_and_its_command_is_data():
    from deploy_tool.locust import command, summarize

    stats = [{"num_requests": 90, "num_failures": 0, "start_time": 100.0, "last_request_timestamp": 110.0,
              "max_response_time": 250.5, "response_times": {"10": 50, "20": 30, "200": 10}},
             {"num_requests": 10, "num_failures": 2, "start_time": 101.0, "last_request_timestamp": 109.0,
              "max_response_time": 90.0, "response_times": {"30": 8}}]
    summary = summarize(stats)
    assert (summary["requests"], summary["failed"], summary["rps"]) == (100, 2, 10.0)
    assert (summary["p50_ms"], summary["p90_ms"], summary["p99_ms"], summary["max_ms"]) == (10.0, 200.0, 200.0, 250.5)
    argv, env = command("10.0.0.5", BenchLoad(engine="locust", connections=8, rate=40, duration=3), "demo.lab")
    assert argv[argv.index("--host") + 1] == "http://10.0.0.5" and argv[argv.index("-u") + 1] == "8"
    assert (env["DEPLOYKIT_HOST_HEADER"], env["DEPLOYKIT_USER_RATE"]) == ("demo.lab", "5.0")
    with pytest.raises(DeployError):
        BenchLoad(engine="wrk", workers=2).validate()


class Stalling(Slow):
    """Answers after 50 ms, except while it stalls (from 1.2 s after its first request, for 1.6 s): then every
    request waits for the stall's end, as an app does while its host is busy with a deploy."""
    first: float | None = None

    def do_GET(self):  # noqa: N802 - the http.server API
        now = time.monotonic()
        first = Stalling.first = Stalling.first or now
        if first + 1.2 <= now < first + 2.8:
            time.sleep(first + 2.8 - now)
        super().do_GET()


def test_the_load_client_counts_what_was_answered_each_second_as_well_as_what_was_due():
    """A stall shows in the seconds the answers come (the capacity served), not only in the latency of the
    requests due then (an open loop's own count)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run([sys.executable, str(ROOT / "module_utils" / "deploykit_load.py"), "--url",
                                 f"http://127.0.0.1:{server.server_address[1]}/", "--rate", "40", "--concurrency",
                                 "80", "--duration", "4", "--json"], capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    out = json.loads(result.stdout)
    buckets = {b["second"]: b for b in out["buckets"]}
    assert out["failures"] == 0 and [buckets[s]["requests"] for s in range(4)] == [40] * 4  # due: steady
    answered = [buckets.get(s, {}).get("answered", 0) for s in range(5)]
    assert sum(answered) == 160
    assert answered[0] >= 35 and answered[1] < 20, answered  # the stall: few answers in second 1 (from 1.2 s on)
    assert max(answered[2:]) > 50, answered  # what waited is answered at once when it ends
