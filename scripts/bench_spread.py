"""How evenly a server's processes take the connections of one listener: figures, not pass/fail (docs/bench.md,
"Connections per process").

The field's reference runs asked it of uvicorn: it has no equivalent of gunicorn gthread's worker_connections (a
worker at its limit stops accepting), so with several processes behind one listener one of them may take more
connections than the others. For each setup: deploy it (strategy recreate) to a one-host lab fleet, run wrk on
the host straight to the app's port (keep-alive connections, the example Django page), and in the middle of the
run count the port's established connections per server process (`ss -tnp` on the host, three looks 0.5 s
apart; the fullest is printed). Each setup runs `--repeats` times, interleaved (A B C A B C).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy_tool.fleetnames import host_container_name  # noqa: E402

DEFAULT_SETUPS = "gunicorn-gthread,gunicorn-uvicorn,uvicorn,granian,granian-asgi"
APP = ("--project", "apps/django_demo")
PORT = 8000


def say(line: str) -> None:
    print(line, flush=True)


def deploy(*args: str) -> None:
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "deploy"), *args], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"deploy {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


def on_host(container: str, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["docker", "exec", container, *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def connections_per_process(container: str) -> list[int]:
    """The port's established connections, counted per process that holds them, largest first."""
    out = subprocess.run(["docker", "exec", container, "ss", "-tnpH", "state", "established",
                          f"( sport = :{PORT} )"], capture_output=True, text=True, check=True).stdout
    owners: Counter[int] = Counter()
    for line in out.splitlines():
        pids = set(re.findall(r"pid=(\d+)", line))
        for pid in pids:  # a socket shared by processes counts once for each: none of these servers does that
            owners[int(pid)] += 1
    return sorted(owners.values(), reverse=True)


def run_one(container: str, connections: int, duration: int) -> dict[str, Any]:
    wrk = on_host(container, "wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s",
                  f"http://127.0.0.1:{PORT}/")
    time.sleep(duration / 2 - 1)
    looks = []
    for _ in range(3):
        looks.append(connections_per_process(container))
        time.sleep(0.5)
    counts = max(looks, key=sum)  # a look can miss them all (seen a few times with gthread): the fullest one
    out, err = wrk.communicate(timeout=duration + 60)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(rate.group(1)) if rate else 0.0, "per_process": counts,
            "errors": errors.group(1) if errors else "", "non_2xx": re.findall(r"Non-2xx.*: (\d+)", out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", default="bench-ref", help="the lab fleet (one host; made if missing)")
    parser.add_argument("--setups", default=DEFAULT_SETUPS, help=f"variants, comma-separated ({DEFAULT_SETUPS})")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", default="16,64,256", help="wrk connections, comma-separated")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--release", default="ref-1")
    parser.add_argument("--keep", action="store_true", help="leave the fleet up")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    setups = [s for s in args.setups.split(",") if s]
    levels = [int(c) for c in args.connections.split(",") if c]

    say(f"==> lab fleet {args.fleet}: one host, provisioned; release {args.release} of apps/django_demo")
    deploy("lab", "up", "--fleet", args.fleet, "--hosts", "1")
    inventory = f".deploykit/fleets/{args.fleet}/hosts.yml"
    deploy("provision", "-i", inventory)
    deploy("build", *APP, "--version", args.release, "--rebuild")  # this checkout's launcher and servers
    container = host_container_name(args.fleet, 1)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {s: {c: [] for c in levels} for s in setups}
    try:
        for round_number in range(1, args.repeats + 1):
            for setup in setups:
                deploy("-i", inventory, *APP, "--version", args.release, "--variant", setup, "--processes",
                       str(args.processes), "--threads", str(args.threads), "--strategy", "recreate", "--no-smoke",
                       "--no-swap-report")
                for level in levels:
                    figures = run_one(container, level, args.duration)
                    counts = figures["per_process"]  # a process holding none is not in ss's list
                    figures["per_process"] = counts + [0] * max(0, args.processes - len(counts))
                    results[setup][level].append(figures)
                    say(f"round {round_number}  {setup:18} {level:4} connections: {figures['rps']:8.1f} req/s, "
                        f"per process {figures['per_process']}"
                        + (f", socket errors {figures['errors']}" if figures["errors"] else ""))
    finally:
        if not args.keep:
            deploy("lab", "down", "--fleet", args.fleet)
    say(f"\n{args.processes}x{args.threads} each; wrk on the host straight to port {PORT}, {args.duration} s; "
        "median of the rounds; connections per process from the last round (largest first)")
    say(f"{'setup':18} {'conns':>5} {'req/s':>8} {'spread':>7}  per process   largest/even share")
    for setup in setups:
        for level in levels:
            runs = results[setup][level]
            rates = [r["rps"] for r in runs]
            median = statistics.median(rates)
            spread = (max(rates) - min(rates)) / median * 100 if median else 0.0
            counts = runs[-1]["per_process"]
            share = max(counts) / (sum(counts) / args.processes) if counts and sum(counts) else 0.0
            say(f"{setup:18} {level:5} {median:8.1f} {spread:6.1f}%  {str(counts):13} {share:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"processes": args.processes, "threads": args.threads, "results": {
            s: {str(c): r for c, r in by_level.items()} for s, by_level in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
