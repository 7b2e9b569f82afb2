"""A load client that counts failures itself, for swap tests and benchmarks.

wrk and ab count a server's normal close after a non-keep-alive answer as an error, and `ab -t` counts the
requests in flight at its deadline as failures; this client counts what a user would see: a request fails
when the connection is refused or reset, times out, or the answer is not 2xx/3xx. Half of the workers keep
one connection alive across requests, the other half open a new connection for each request.
A request sent on a kept-alive connection that the server closed at that moment (no answer at all) is sent
again once on a new connection, as browsers and HTTP libraries do for idempotent requests (RFC 9112, 9.3.1):
nginx closes idle kept-alive connections when it reloads. Those retries are counted apart (`retried`).
Bounded in time; it stops by itself. Targets must be loopback or the lab hosts' own addresses.

    python -m deploy_tool.loadgen --url http://172.22.0.2/health --url http://172.22.0.3/health \\
        --host-header demo.lab --concurrency 64 --duration 30 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field


def _pick(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted latencies, rounded; 0.0 for none."""
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0.0

@dataclass
class Bucket:
    requests: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class LoadResult:
    requests: int
    failures: int
    errors: dict[str, int]
    statuses: dict[str, int]
    duration: float
    latencies_ms: list[float]
    buckets: list[dict[str, float]]
    started_at: float = 0.0
    retried: int = 0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, object]:
        return {
            "requests": self.requests, "failures": self.failures, "errors": self.errors, "statuses": self.statuses,
            "duration_s": round(self.duration, 3),
            "rps": round(self.requests / self.duration, 1) if self.duration else 0,
            "p50_ms": round(self.percentile(0.50), 2), "p90_ms": round(self.percentile(0.90), 2),
            "p99_ms": round(self.percentile(0.99), 2), "max_ms": round(max(self.latencies_ms, default=0.0), 2),
            "buckets": self.buckets, "started_at": round(self.started_at, 3), "retried": self.retried,
        }


@dataclass(frozen=True)
class Target:
    address: str
    port: int
    path: str
    host_header: str

    @classmethod
    def parse(cls, url: str, host_header: str | None) -> Target:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"only http:// URLs are supported, not {url!r}")
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        return cls(parsed.hostname, parsed.port or 80, path, host_header or parsed.netloc)


class LoadRun:
    """`concurrency` workers per URL, every one of them bounded by `duration`."""

    def __init__(self, urls: list[str] | str, host_header: str | None, concurrency: int, duration: float,
                 timeout: float = 10.0, rate: float = 0.0) -> None:
        self.rate = rate  # requests per second per URL, spread over its workers; 0: as fast as they can
        self.targets = [Target.parse(url, host_header) for url in ([urls] if isinstance(urls, str) else urls)]
        self.concurrency = concurrency
        self.duration = duration
        self.timeout = timeout
        self.lock = threading.Lock()
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.retried = 0
        self.buckets: dict[int, Bucket] = {}
        self.start = 0.0
        self.deadline = 0.0

    def stop(self) -> None:
        """End the run now: workers finish the request they are in and stop."""
        self.deadline = min(self.deadline, time.monotonic())

    def _record(self, began: float, ok: bool, status: str | None, error: str | None) -> None:
        elapsed = time.monotonic() - began
        second = int(began - self.start)
        with self.lock:
            bucket = self.buckets.setdefault(second, Bucket())
            bucket.requests += 1
            if ok:
                bucket.latencies.append(elapsed * 1000)
            else:
                bucket.failures += 1
            if status:
                self.statuses[status] += 1
            if error:
                self.errors[error] += 1

    def _pace(self, due: float) -> float:
        """With a rate, wait until this worker's next request is due; return when the one after is due."""
        if not self.rate:
            return due
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return due + self.concurrency / self.rate

    def _worker(self, target: Target, keep_alive: bool, index: int = 0) -> None:
        connection: http.client.HTTPConnection | None = None
        due = self.start + (index / self.rate if self.rate else 0.0)
        headers = {"Host": target.host_header, "User-Agent": "deploykit-loadgen"}
        if not keep_alive:
            headers["Connection"] = "close"
        while time.monotonic() < self.deadline:
            due = self._pace(due)
            if time.monotonic() >= self.deadline:
                break
            began = time.monotonic()
            try:
                reused = connection is not None
                if connection is None:
                    connection = http.client.HTTPConnection(target.address, target.port, timeout=self.timeout)
                try:
                    connection.request("GET", target.path, headers=headers)
                    response = connection.getresponse()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if not reused:
                        raise
                    connection.close()  # closed by the server as we sent: once more, on a new connection
                    with self.lock:
                        self.retried += 1
                    connection = http.client.HTTPConnection(target.address, target.port, timeout=self.timeout)
                    connection.request("GET", target.path, headers=headers)
                    response = connection.getresponse()
                response.read()
                ok = 200 <= response.status < 400
                self._record(began, ok, str(response.status), None if ok else f"HTTP {response.status}")
                if not keep_alive or response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                self._record(began, False, None, type(exc).__name__)
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def run(self) -> LoadResult:
        self.start = time.monotonic()
        started_at = time.time()
        self.deadline = self.start + self.duration
        threads = [threading.Thread(target=self._worker, args=(target, i % 2 == 0, i), daemon=True)
                   for target in self.targets for i in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=self.duration + self.timeout + 5)
        elapsed = time.monotonic() - self.start
        latencies = [ms for bucket in self.buckets.values() for ms in bucket.latencies]
        buckets = []
        for second in sorted(self.buckets):
            b = self.buckets[second]
            ordered = sorted(b.latencies)
            buckets.append({"second": second, "requests": b.requests, "failures": b.failures,
                            "p50_ms": _pick(ordered, 0.5), "p99_ms": _pick(ordered, 0.99)})
        return LoadResult(requests=sum(b.requests for b in self.buckets.values()),
                          failures=sum(b.failures for b in self.buckets.values()), errors=dict(self.errors),
                          statuses=dict(self.statuses), duration=elapsed, latencies_ms=latencies, buckets=buckets,
                          started_at=started_at, retried=self.retried)


def stop_with_parent(run: LoadRun, parent: int, period: float = 0.5) -> None:
    """End the run once the parent is gone (this process is then another's child)."""
    while os.getppid() == parent:
        time.sleep(period)
    run.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy_tool.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, action="append", help="http:// URL; repeat for several hosts")
    parser.add_argument("--host-header")
    parser.add_argument("--concurrency", type=int, default=64, help="connections per URL")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (at most 600)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests per second per URL (default 0: each worker as fast as it can)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--with-parent", action="store_true",
                        help="stop when the process that started this one ends (a deploy killed mid-swap)")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 < args.concurrency <= 1024:
        parser.error("duration must be in (0, 600] seconds and concurrency in 1..1024")
    if args.rate < 0:
        parser.error("rate must be 0 (unpaced) or more")
    run = LoadRun(args.url, args.host_header, args.concurrency, args.duration, args.timeout, args.rate)
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop early, still report
        signal.signal(signum, lambda *_: run.stop())
    if args.with_parent:
        threading.Thread(target=stop_with_parent, args=(run, os.getppid()), daemon=True).start()
    result = run.run()
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['requests']} requests, {summary['failures']} failed, {summary['rps']} req/s, "
              f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, errors {summary['errors']}, "
              f"retried on a closed kept-alive connection {summary['retried']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

