"""The locust engine: the Django browse-form-POST-redirect scenario (apps/locust/locustfile.py), from the
controller against every web host at once, one locust per host; with workers, each one a master and its
worker processes (locust's distributed mode: workers on other machines join with --master-host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploy_tool import external
from deploy_tool.errors import DeployError

LOCUSTFILE = Path(__file__).resolve().parent.parent / "apps" / "locust" / "locustfile.py"
BASE_PORT = 5557  # master ports: 5557, 5567, ... one per host


def command(address: str, load: Any, host_header: str) -> tuple[list[str], dict[str, str]]:
    """locust's command line (as data) for one host, and its environment."""
    argv = [str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless",
            "-u", str(load.connections), "-r", str(load.connections), "-t", f"{load.duration}s",
            "--host", f"http://{address}", "--json", "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5"]
    env = {**os.environ, "DEPLOYKIT_HOST_HEADER": host_header,
           "DEPLOYKIT_USER_RATE": str(round(load.rate / load.connections, 4))}
    return argv, env


def summarize(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """locust's per-request-name stats as one summary: requests, failed, rps, percentiles (from its histogram)."""
    histogram: dict[int, int] = {}
    for entry in stats:
        for ms, count in entry.get("response_times", {}).items():
            histogram[int(float(ms))] = histogram.get(int(float(ms)), 0) + count
    requests = sum(e["num_requests"] for e in stats)
    failed = sum(e["num_failures"] for e in stats)
    start = min((e["start_time"] for e in stats if e.get("start_time")), default=0.0)
    end = max((e["last_request_timestamp"] or 0 for e in stats), default=0.0)
    duration = max(end - start, 0.001)
    ordered = sorted(histogram.items())
    total = sum(histogram.values())

    def pick(q: float) -> float:
        seen = 0
        for ms, count in ordered:
            seen += count
            if seen >= q * total:
                return float(ms)
        return 0.0

    return {"requests": requests, "failed": failed, "errors": {"locust": failed} if failed else {},
            "rps": round(requests / duration, 1), "p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99),
            "max_ms": round(max((e["max_response_time"] or 0 for e in stats), default=0.0), 2), "engine": "locust"}


def run_locust(addresses: dict[str, str], load: Any, host_header: str = "demo.lab") -> dict[str, dict[str, Any]]:
    """{host: summary} of one locust per host, all at once."""
    running: dict[str, tuple[subprocess.Popen[str], list[subprocess.Popen[str]]]] = {}
    for index, (host, address) in enumerate(sorted(addresses.items())):
        argv, env = command(address, load, host_header)
        workers = []
        if load.workers:
            port = BASE_PORT + 10 * index
            argv += ["--master", "--master-bind-port", str(port), "--expect-workers", str(load.workers)]
            worker_argv = [argv[0], "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1",
                           "--master-port", str(port), "--loglevel", "WARNING"]
            workers = [subprocess.Popen(worker_argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True) for _ in range(load.workers)]
        master = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        running[host] = (master, workers)
    results = {}
    for host, (master, workers) in running.items():
        out, err = external.finish(master, f"locust against {host}", load.duration + 120)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        try:
            results[host] = summarize(json.loads(out))
        except (ValueError, KeyError) as exc:
            raise DeployError(f"locust against {host} gave no results (rc={master.returncode}): "
                              f"{err.strip()[-400:]}", hint="run it by hand: see apps/locust/locustfile.py") from exc
    return results
