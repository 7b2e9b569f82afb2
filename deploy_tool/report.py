"""The swap-window report: a load through nginx on every web host while the deploy runs, and its picture.

`SwapWatch` runs the load client (module_utils/deploykit_load.py) in its own process (so the deploy's work does
not slow the client down) over the deploy; `write_report` turns the load's per-second buckets and each host's
swap moments (new container healthy, old one stopped) into swap.json, swap.png and swap.html.
"""

from __future__ import annotations

import html
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_tool import external
from deploy_tool.errors import DeployError
from deploy_tool.project import Project


@dataclass
class SwapWatch:
    """The load client in a process of its own, from before the deploy until after it."""
    addresses: dict[str, str]
    host_header: str = "demo.lab"
    path: str = "/health"
    concurrency: int = 8
    rate: float = 50.0
    tls: bool = False  # over HTTPS, to nginx's TLS port (the app's tls)
    process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        scheme = "https" if self.tls else "http"
        urls = [arg for address in self.addresses.values() for arg in ("--url", f"{scheme}://{address}{self.path}")]
        self.process = subprocess.Popen(
            [sys.executable, str(Project.locate().load_client), *urls, "--host-header", self.host_header,
             "--concurrency", str(self.concurrency), "--rate", str(self.rate), "--duration", "600", "--json",
             "--with-parent"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # a second of the steady state before the swap

    def stop(self) -> dict[str, Any]:
        assert self.process is not None
        time.sleep(1.0)  # and one after it
        self.process.send_signal(signal.SIGINT)
        out, err = external.finish(self.process, "the swap-window load client", 60)
        if self.process.returncode != 0 or not out.strip():
            raise DeployError(f"the swap-window load client failed: {err.strip()[-400:]}")
        result: dict[str, Any] = json.loads(out)
        return result


def swap_marks(swaps: dict[str, dict[str, Any]], load_started: float) -> list[dict[str, Any]]:
    """Per host, the moments (seconds since the load started) its new container was healthy and its old one
    stopped."""
    marks = []
    for host, result in sorted(swaps.items()):
        started_at = result.get("started_at")
        for step in ("healthy", "old_stopped"):
            seconds = (result.get("timings") or {}).get(step)
            if started_at is not None and seconds is not None:
                marks.append({"host": host, "step": step, "second": round(started_at + seconds - load_started, 3)})
    return marks


def plot(load: dict[str, Any], marks: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = load["buckets"]
    seconds = [b["second"] for b in buckets]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), dpi=100)
    top.bar(seconds, [b["requests"] - b["failures"] for b in buckets], width=0.9, color="#4c8bbf", label="answered")
    top.bar(seconds, [b["failures"] for b in buckets], width=0.9, color="#d62728", label="failed",
            bottom=[b["requests"] - b["failures"] for b in buckets])
    top.set_ylabel("requests / s")
    bottom.plot(seconds, [b["p50_ms"] for b in buckets], marker=".", label="p50")
    bottom.plot(seconds, [b["p99_ms"] for b in buckets], marker=".", label="p99")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds since the load started")
    styles = {"healthy": ("#2ca02c", "--", "new healthy"), "old_stopped": ("#ff7f0e", ":", "old stopped")}
    for axis in (top, bottom):
        seen = set()
        for mark in marks:
            color, style, label = styles[mark["step"]]
            axis.axvline(mark["second"], color=color, linestyle=style,
                         label=label if mark["step"] not in seen else None)
            seen.add(mark["step"])
        axis.legend(loc="upper right", fontsize="small")
        axis.grid(alpha=0.3)
    top.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_report(project: Project, action: str, version: str, load: dict[str, Any],
                 swaps: dict[str, dict[str, Any]], smoke_lines: list[str] | None = None,
                 phases: dict[str, float] | None = None) -> Path:
    """Write swap.json, swap.png and swap.html to .deploykit/reports/<time>-<action>-<version>/; return the HTML."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(load.get("started_at") or time.time()))
    folder = project.state_dir / "reports" / f"{stamp}-{action}-{version.replace('/', '_')}"
    folder.mkdir(parents=True, exist_ok=True)
    marks = swap_marks(swaps, load.get("started_at", 0.0))
    title = f"{action} {version}: {load['requests']} requests, {load['failures']} failed"
    (folder / "swap.json").write_text(json.dumps({"action": action, "version": version, "load": load,
                                                  "marks": marks, "swaps": swaps, "phases": phases or {}},
                                                 indent=2) + "\n")
    plot(load, marks, title, folder / "swap.png")
    rows = "".join(f"<tr><td>{html.escape(m['host'])}</td><td>{m['step'].replace('_', ' ')}</td>"
                   f"<td>{m['second']:.2f} s</td></tr>" for m in marks)
    errors = ", ".join(f"{k}: {v}" for k, v in load.get("errors", {}).items()) or "none"
    smoke = f"<h2>Smoke benchmark</h2><pre>{html.escape(chr(10).join(smoke_lines))}</pre>" if smoke_lines else ""
    timing = "".join(f"<tr><td>{html.escape(name)}</td><td>{seconds:.2f} s</td></tr>"
                     for name, seconds in (phases or {}).items())
    timing = f"<h2>Where the time went</h2><table><tr><th>phase</th><th>seconds</th></tr>{timing}</table>" \
        if timing else ""
    (folder / "swap.html").write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 12px;text-align:left}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Load through nginx on every web host during the deploy: {load['rps']} req/s,
p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, max {load['max_ms']} ms; errors: {html.escape(errors)}.</p>
<img src="swap.png" alt="requests per second and latency across the swap" width="1000">
<h2>Swap moments</h2><table><tr><th>host</th><th>step</th><th>at</th></tr>{rows}</table>
{timing}
{smoke}
</body></html>
""", encoding="utf-8")
    return folder / "swap.html"
