"""deploykit's one load client, standard library only: the deploykit_bench module runs it on a host (its `rate`
engine), the controller runs this file as a script (the swap-window load of `deploy`, the lab tests' load).

It counts what a user would see: a request fails when the connection is refused or reset, times out, or the
answer is not 2xx/3xx (wrk and ab also count a server's normal close after a non-keep-alive answer, and `ab -t`
the requests in flight at its deadline). A request sent on a kept-alive connection that the server closed at
that moment (no answer at all) is sent again once on a new connection, as browsers and HTTP libraries do for
idempotent requests (RFC 9112, 9.3.1): nginx closes idle kept-alive connections when it reloads. Those retries
are counted apart (`retried`).

With a rate the load is an open loop: request i of a URL is due at start + i / rate, the next free worker of
that URL sends it, and its latency counts from when it was due, not from when a worker was free to send it (a
stalled server shows as latency instead of hiding it: coordinated omission). Every request due within the
duration is sent, late ones too, unless the run is stopped. Without a rate each worker sends as fast as it can
until the duration is over. Bounded in time either way.

    python module_utils/deploykit_load.py --url http://172.22.0.2/health --url http://172.22.0.3/health \\
        --host-header demo.lab --concurrency 64 --duration 30 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0 < q < 1) of values sorted in ascending order, by nearest rank; 0.0 for none."""
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else 0.0


@dataclass(frozen=True)
class Target:
    address: str
    port: int
    path: str
    host_header: str
    tls: bool = False  # https://: the Host header's name sent as SNI; the certificate is not verified (this load
    # measures whether and how fast requests are answered; clients verify it, the lab's tests with its CA)

    @classmethod
    def parse(cls, url: str, host_header: str | None) -> Target:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"only http:// and https:// URLs are supported, not {url!r}")
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        tls = parsed.scheme == "https"
        return cls(parsed.hostname, parsed.port or (443 if tls else 80), path, host_header or parsed.netloc, tls)

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if not self.tls:
            return http.client.HTTPConnection(self.address, self.port, timeout=timeout)
        return _TLSConnection(self, timeout)


_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS to the target's address, with its Host header's name as SNI (http.client would send the address)."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.address, target.port, timeout=timeout, context=_UNVERIFIED)
        self._server_name = target.host_header.rsplit(":", 1)[0] if target.host_header.count(":") == 1 \
            else target.host_header

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = _UNVERIFIED.wrap_socket(sock, server_hostname=self._server_name)


@dataclass
class Bucket:
    """The requests sent in one second of the run."""

    requests: int = 0  # due in this second
    failures: int = 0
    latencies: list[float] = field(default_factory=list)
    answered: int = 0  # answered (2xx, 3xx) in this second, whenever they were due: the capacity served


@dataclass
class LoadResult:
    requests: int
    failures: int
    errors: dict[str, int]
    statuses: dict[str, int]
    duration: float
    latencies_ms: list[float]  # sorted
    buckets: list[dict[str, float]]
    started_at: float = 0.0
    retried: int = 0

    def summary(self) -> dict[str, object]:
        ordered = self.latencies_ms
        return {
            "requests": self.requests, "failures": self.failures, "errors": self.errors, "statuses": self.statuses,
            "duration_s": round(self.duration, 3),
            "rps": round(self.requests / self.duration, 1) if self.duration else 0,
            "p50_ms": round(percentile(ordered, 0.50), 2), "p90_ms": round(percentile(ordered, 0.90), 2),
            "p99_ms": round(percentile(ordered, 0.99), 2), "max_ms": round(ordered[-1] if ordered else 0.0, 2),
            "buckets": self.buckets, "started_at": round(self.started_at, 3), "retried": self.retried,
        }


class LoadRun:
    """`concurrency` workers per target. `keep_alive`: "all" workers keep their connection across requests, or
    "half" of them (the others open a new connection per request)."""

    def __init__(self, targets: Sequence[Target], concurrency: int, duration: float, timeout: float = 10.0,
                 rate: float = 0.0, keep_alive: str = "half", user_agent: str = "deploykit-load") -> None:
        if keep_alive not in ("all", "half"):
            raise ValueError(f"keep_alive is all or half, not {keep_alive!r}")
        self.targets = list(targets)
        self.concurrency = concurrency
        self.duration = duration
        self.timeout = timeout
        self.rate = rate  # requests per second per target; 0: each worker as fast as it can
        self.keep_alive = keep_alive
        self.user_agent = user_agent
        self.total = int(rate * duration)  # with a rate: the requests due within the duration, per target
        self.lock = threading.Lock()
        self.next_index = [0] * len(self.targets)
        self.errors: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.retried = 0
        self.buckets: dict[int, Bucket] = {}
        self.start = 0.0
        self.deadline = 0.0
        self.stopped = False

    def stop(self) -> None:
        """End the run now: workers finish the request they are in and stop."""
        self.stopped = True
        self.deadline = min(self.deadline, time.monotonic())

    def _due(self, target: int) -> float | None:
        """When this worker's next request is due, or None when the run is over. With a rate: the next of the
        target's schedule (waited for); without: now."""
        if self.stopped:
            return None
        if not self.rate:
            now = time.monotonic()
            return now if now < self.deadline else None
        with self.lock:
            index = self.next_index[target]
            self.next_index[target] += 1
        if index >= self.total:
            return None
        due = self.start + index / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return None if self.stopped else due

    def _record(self, due: float, ok: bool, status: str | None, error: str | None) -> None:
        now = time.monotonic()
        second = max(0, int(due - self.start))
        with self.lock:
            bucket = self.buckets.setdefault(second, Bucket())
            bucket.requests += 1
            if ok:
                bucket.latencies.append((now - due) * 1000)
                self.buckets.setdefault(max(0, int(now - self.start)), Bucket()).answered += 1
            else:
                bucket.failures += 1
            if status:
                self.statuses[status] += 1
            if error:
                self.errors[error] += 1

    def _send(self, connection: http.client.HTTPConnection, target: Target,
              headers: dict[str, str]) -> http.client.HTTPResponse:
        connection.request("GET", target.path, headers=headers)
        return connection.getresponse()

    def _worker(self, index: int, keep_alive: bool) -> None:
        target = self.targets[index]
        connection: http.client.HTTPConnection | None = None
        headers = {"Host": target.host_header, "User-Agent": self.user_agent}
        if not keep_alive:
            headers["Connection"] = "close"
        while (due := self._due(index)) is not None:
            try:
                reused = connection is not None
                if connection is None:
                    connection = target.connection(self.timeout)
                try:
                    response = self._send(connection, target, headers)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if not reused:
                        raise
                    connection.close()  # closed by the server as we sent: once more, on a new connection
                    with self.lock:
                        self.retried += 1
                    connection = target.connection(self.timeout)
                    response = self._send(connection, target, headers)
                response.read()
                ok = 200 <= response.status < 400
                self._record(due, ok, str(response.status), None if ok else f"HTTP {response.status}")
                if not keep_alive or response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                self._record(due, False, None, type(exc).__name__)
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def run(self) -> LoadResult:
        self.start = time.monotonic() + (0.05 if self.rate else 0.0)  # the workers are started by then
        started_at = time.time()
        self.deadline = self.start + self.duration
        threads = [threading.Thread(target=self._worker, args=(t, self.keep_alive == "all" or i % 2 == 0),
                                    daemon=True)
                   for t in range(len(self.targets)) for i in range(self.concurrency)]
        for thread in threads:
            thread.start()
        limit = time.monotonic() + self.duration + self.timeout + 30
        for thread in threads:
            thread.join(timeout=max(0.0, limit - time.monotonic()))
        elapsed = max(time.monotonic() - self.start, 0.001)
        with self.lock:
            seconds = dict(self.buckets)
        latencies = sorted(ms for bucket in seconds.values() for ms in bucket.latencies)
        buckets = []
        for second in sorted(seconds):
            b = seconds[second]
            ordered = sorted(b.latencies)
            buckets.append({"second": second, "requests": b.requests, "failures": b.failures, "answered": b.answered,
                            "p50_ms": round(percentile(ordered, 0.5), 2),
                            "p99_ms": round(percentile(ordered, 0.99), 2)})
        return LoadResult(requests=sum(b.requests for b in seconds.values()),
                          failures=sum(b.failures for b in seconds.values()), errors=dict(self.errors),
                          statuses=dict(self.statuses), duration=elapsed, latencies_ms=latencies, buckets=buckets,
                          started_at=started_at, retried=self.retried)


def stop_with_parent(run: LoadRun, parent: int, period: float = 0.5) -> None:
    """End the run once the parent is gone (this process is then another's child)."""
    while os.getppid() == parent:
        time.sleep(period)
    run.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python module_utils/deploykit_load.py",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", required=True, action="append", help="http:// URL; repeat for several hosts")
    parser.add_argument("--host-header")
    parser.add_argument("--concurrency", type=int, default=64, help="connections per URL")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (at most 600)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests per second per URL, an open loop (default 0: each worker as fast as it can)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--with-parent", action="store_true",
                        help="stop when the process that started this one ends (a deploy killed mid-swap)")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 < args.concurrency <= 1024:
        parser.error("duration must be in (0, 600] seconds and concurrency in 1..1024")
    if args.rate < 0:
        parser.error("rate must be 0 (unpaced) or more")
    try:
        targets = [Target.parse(url, args.host_header) for url in args.url]
    except ValueError as exc:
        parser.error(str(exc))
    run = LoadRun(targets, args.concurrency, args.duration, args.timeout, args.rate)
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop early, still report
        signal.signal(signum, lambda *_: run.stop())
    if args.with_parent:
        threading.Thread(target=stop_with_parent, args=(run, os.getppid()), daemon=True).start()
    summary = run.run().summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['requests']} requests, {summary['failures']} failed, {summary['rps']} req/s, "
              f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, errors {summary['errors']}, "
              f"retried on a closed kept-alive connection {summary['retried']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
