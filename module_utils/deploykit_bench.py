"""The benchmark client of library/deploykit_bench.py: wrk (closed loop) or the open-loop client of
deploykit_load.py, optionally pinned to some of the client machine's CPUs. No Ansible in here: the module passes
its run_command; tests use it as is."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.deploykit_load import LoadRun, Target, percentile

Run = Callable[[list[str]], tuple[int, str, str]]  # argv -> (rc, stdout, stderr), as AnsibleModule.run_command

# wrk's done() hook: one JSON line with the summary (latencies in microseconds).
WRK_REPORT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('DEPLOYKIT_BENCH {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""
CPU_LIST = re.compile(r"^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$")  # ASCII digits (\d takes others)
LIMITS = (("duration", 1, 600), ("connections", 1, 4096), ("threads", 1, 64), ("rate", 1, 100000),
          ("timeout", 1, 300))


class BenchError(Exception):
    pass


def parse_cpus(text: str) -> set[int]:
    """A CPU list as taskset and cpuset take it ("0", "0-1", "0,2-3"); empty: none given."""
    if not text:
        return set()
    if not CPU_LIST.fullmatch(text):
        raise BenchError(f"cpus must be a CPU list such as 0, 0-1 or 0,2-3, not {text!r}")
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise BenchError(f"cpus {text!r}: the range {part} runs backwards")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def validate(params: dict[str, Any]) -> None:
    parts = urlsplit(params["url"])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError("url must be an http:// or https:// URL with a host, not {!r}".format(params["url"]))
    for name, low, high in LIMITS:
        if not low <= params[name] <= high:
            raise BenchError(f"{name} must be between {low} and {high}, not {params[name]}")
    if params["engine"] == "wrk" and params["threads"] > params["connections"]:
        raise BenchError("wrk needs at least as many connections as threads")
    usable = os.sched_getaffinity(0)
    outside = parse_cpus(params.get("cpus") or "") - usable
    if outside:
        raise BenchError(f"cpus {params['cpus']!r} names CPUs this machine does not offer the client: "
                         f"{sorted(outside)} (usable: {sorted(usable)})")


def pin(cpus: str) -> list[int]:
    """Keep this process, and the clients it starts, on `cpus` (none given: where it is); the CPUs it then runs on,
    as the kernel reports them."""
    if cpus:
        os.sched_setaffinity(0, parse_cpus(cpus))
    return sorted(os.sched_getaffinity(0))


def summarize(requests: int, errors: dict[str, int], duration: float, p50: float, p90: float, p99: float,
              top: float) -> dict[str, Any]:
    failures = sum(errors.values())
    return dict(requests=requests, failures=failures, errors=dict((k, v) for k, v in errors.items() if v),
                duration_s=round(duration, 3), rps=round(requests / duration, 1) if duration else 0.0,
                p50_ms=round(p50, 2), p90_ms=round(p90, 2), p99_ms=round(p99, 2), max_ms=round(top, 2))


def wrk_argv(params: dict[str, Any], script: str) -> list[str]:
    return [params["wrk_path"], "-t", str(params["threads"]), "-c", str(params["connections"]),
            "-d", f"{params['duration']}s", "--timeout", f"{params['timeout']}s", "-s", script,
            "-H", "Host: {}".format(params["host_header"]), params["url"]]


def run_wrk(run: Run, params: dict[str, Any], warn: Callable[[str], None]) -> dict[str, Any]:
    handle, script = tempfile.mkstemp(suffix=".lua", prefix="deploykit-bench-")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(WRK_REPORT)
        argv = wrk_argv(params, script)
        rc, out, err = run(argv)
        if rc == 0 and not (out + err).strip():
            # seen once in a quickstart run: wrk exited 0 having printed nothing, not even its own summary (cause
            # not found); one more run, said in the result's warnings, rather than a failed smoke benchmark
            warn("wrk exited 0 with no output: ran it once more")
            rc, out, err = run(argv)
    finally:
        os.unlink(script)
    lines = [line for line in out.splitlines() if line.startswith("DEPLOYKIT_BENCH ")]
    if rc != 0 or not lines:
        raise BenchError("wrk failed (rc={}): {}".format(rc, (err or out).strip()[-500:] or "no output"))
    data = json.loads(lines[-1].split(" ", 1)[1])
    errors = dict((k, data[k]) for k in ("connect", "read", "write", "status", "timeout"))
    us = 1000.0
    return summarize(data["requests"], errors, data["duration_us"] / 1e6, data["p50_us"] / us,
                     data["p90_us"] / us, data["p99_us"] / us, data["max_us"] / us)


def run_rate(params: dict[str, Any]) -> dict[str, Any]:
    """The open-loop client (deploykit_load.py): every connection kept alive, latency from each request's due
    time."""
    target = Target.parse(params["url"], params["host_header"])
    run = LoadRun([target], params["connections"], params["duration"], params["timeout"], params["rate"],
                  keep_alive="all", user_agent="deploykit-bench")
    result = run.run()
    errors: dict[str, int] = {}
    for name, count in result.errors.items():  # wrk's names for the same kinds
        kind = "status" if name.startswith("HTTP ") else "timeout" if name == "TimeoutError" else name
        errors[kind] = errors.get(kind, 0) + count
    ordered = result.latencies_ms
    summary = summarize(result.requests, errors, result.duration, percentile(ordered, 0.5),
                        percentile(ordered, 0.9), percentile(ordered, 0.99), ordered[-1] if ordered else 0.0)
    summary["retried"] = result.retried
    return summary


def bench(run: Run, params: dict[str, Any], warn: Callable[[str], None]) -> dict[str, Any]:
    """The load of `params` (checked), on the CPUs they name: its summary, with the engine and the CPUs it ran on."""
    validate(params)
    cpus = pin(params.get("cpus") or "")
    result = run_wrk(run, params, warn) if params["engine"] == "wrk" else run_rate(params)
    result.update(engine=params["engine"], url=params["url"], connections=params["connections"],
                  rate=params["rate"] if params["engine"] == "rate" else None, cpus=cpus)
    return result
