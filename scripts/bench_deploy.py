"""How long a deploy takes, what it costs the controller, and what the app serves meanwhile, on a lab fleet.

Run by scripts/bench-deploy (see its --help). Every deploy is the real `deploy` CLI, as a user runs it, of the
example Flask app (apps/flask_demo) in a light setup (gunicorn gthread, one process of 4 threads), so that the
hosts' own boot does not hide the controller's share. Figures, not pass/fail: docs/deploy.md "Speed and scale"
quotes them.

1. Speed: a fleet of --hosts hosts; the first deploy (it ships the image) and a second release's; then --repeats
   deploys of a release already on the hosts (swapping between the two): wall time, the controller's CPU time
   (the deploy's whole process tree: ansible-runner, ansible-playbook and its forks; the persistent SSH masters
   excepted) and each phase (`deploy --json`'s `phases`), median and range.
2. Scale (--scale N): the same fleet grown to N hosts, provisioned, and deployed the same way; each lab host's
   memory (the proportional set size of its processes).
3. Capacity (--capacity): a load at a fixed rate (half of what the first host serves at most) through its nginx,
   an open loop, while that host alone is deployed (--limit): the requests answered in each second against the
   steady rate before the deploy.
4. Warm-up (--warmup): the example Django app (apps/django_demo, gunicorn sync 4x1) swapped on the first host under
   a load at a fixed rate on its page /, alternately without and with `server.warmup: [/]`: the p99 latency of the
   requests due in the seconds after the old container is gone, and the highest p99 of any second of the swap.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = ("--project", str(ROOT / "apps" / "flask_demo"))
LIGHT = ("--variant", "gunicorn-gthread", "--processes", "1", "--threads", "4")
RELEASES = ("speed-1", "speed-2")
LOAD_CLIENT = ROOT / "module_utils" / "deploykit_load.py"
PAGE = "/"  # a page of the app (through Flask's routing and a template), not its health path


def say(line: str) -> None:
    print(line, flush=True)


def deploy(*args: str) -> subprocess.CompletedProcess[str]:
    """The deploy CLI; a failure ends the benchmark with its output."""
    result = subprocess.run([sys.executable, "-m", "deploy_tool", *args], cwd=ROOT, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        sys.exit(f"deploy {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                 f"{result.stderr[-3000:]}")
    return result


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_deploy(inventory: str, release: str, *extra: str, setup: tuple[str, ...] = LIGHT) -> dict[str, Any]:
    """One deploy without smoke benchmark or swap report: its wall time, CPU time and phases."""
    cpu, began = children_cpu(), time.monotonic()
    report = json.loads(deploy("--no-smoke", "--no-swap-report", "--json", "-i", inventory, "--version", release,
                               *APP, *setup, *extra).stdout)
    return {"wall": round(time.monotonic() - began, 2), "cpu": round(children_cpu() - cpu, 2),
            "phases": report.get("phases", {})}


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def print_runs(title: str, runs: list[dict[str, Any]]) -> None:
    say(f"\n{title}: {len(runs)} deploy(s), median (min-max) in seconds")
    say(f"  {'wall':28} {spread([r['wall'] for r in runs])}")
    say(f"  {'controller CPU':28} {spread([r['cpu'] for r in runs])}")
    names = [name for name in runs[0]["phases"] if name != "total"]
    for name in names:
        say(f"  {'  ' + name:28} {spread([r['phases'].get(name, 0.0) for r in runs])}")


def fleet_up(name: str, hosts: int) -> tuple[str, list[dict[str, str]]]:
    up = json.loads(deploy("lab", "up", "--fleet", name, "--hosts", str(hosts), "--json").stdout)
    return up["inventory"], up["hosts"]


def speed(inventory: str, hosts: int, repeats: int) -> dict[str, Any]:
    first = [timed_deploy(inventory, RELEASES[0], "--strategy", "recreate")]
    second = [timed_deploy(inventory, RELEASES[1])]
    print_runs(f"{hosts} hosts, first deploy (ships the image)", first)
    print_runs(f"{hosts} hosts, a second release's first deploy (ships it)", second)
    runs = [timed_deploy(inventory, RELEASES[i % 2]) for i in range(repeats)]
    print_runs(f"{hosts} hosts, a release already on the hosts", runs)
    walls, cpus = [r["wall"] for r in runs], [r["cpu"] for r in runs]
    return {"hosts": hosts, "first": first, "second": second, "runs": runs,
            "wall_median": statistics.median(walls), "cpu_median": statistics.median(cpus)}


def host_memory(fleet: str) -> list[float]:
    """MiB each lab host of the fleet uses: the proportional set size (shared pages split among their users) of
    every process in its container (systemd, sshd, dockerd, containerd, nginx, the app). docker stats cannot say:
    the lab hosts' engine has no memory controller here (it reports 0 B)."""
    names = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter", f"name=deploykit-{fleet}-"],
                           capture_output=True, text=True, check=True).stdout.split()
    used = []
    for name in names:
        if not name.rsplit("-", 1)[1].isdigit():
            continue  # not one of the fleet's hosts (its registry)
        pids = subprocess.run(["docker", "top", name, "-eo", "pid"], capture_output=True, text=True,
                              check=True).stdout.split()[1:]
        kib = 0
        for pid in pids:
            try:
                kib += sum(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                           if line.startswith("Pss:"))
            except OSError:
                continue  # ended meanwhile
        used.append(kib / 1024)
    return used


def load(address: str, rate: float, concurrency: int, duration: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(LOAD_CLIENT), "--url", f"http://{address}{PAGE}", "--host-header",
                             "demo.lab", "--rate", str(rate), "--concurrency", str(concurrency), "--duration",
                             str(duration), "--json", "--with-parent"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def capacity(inventory: str, host: dict[str, str], setup: tuple[str, ...], label: str) -> dict[str, Any]:
    """The answered requests per second through the host's nginx while that host alone is deployed."""
    timed_deploy(inventory, RELEASES[1], "--limit", host["name"], setup=setup)  # serving in this setup
    probe = load(host["address"], 0, 16, 5)
    most = json.loads(probe.communicate(timeout=120)[0])["rps"]
    rate = round(most / 2, 1)
    say(f"\ncapacity on {host['name']} ({label}): it serves {most} req/s at most ({PAGE}, 16 connections); offering "
        f"{rate} req/s, open loop, during a deploy of that host alone")
    client = load(host["address"], rate, 64, 300)
    started = time.monotonic()
    time.sleep(8)
    deploy_began = time.monotonic() - started
    run = timed_deploy(inventory, RELEASES[0], "--limit", host["name"], setup=setup)
    deploy_ended = time.monotonic() - started
    time.sleep(5)
    client.send_signal(signal.SIGINT)
    result = json.loads(client.communicate(timeout=120)[0])
    answered = {int(b["second"]): int(b.get("answered", 0)) for b in result["buckets"]}
    steady = [answered.get(s, 0) for s in range(2, int(deploy_began))]
    during = [answered.get(s, 0) for s in range(int(deploy_began), int(deploy_ended) + 1)]
    steady_rate = statistics.mean(steady) if steady else rate
    low = min(during) if during else 0
    say(f"  steady before the deploy: {steady_rate:.1f} answered/s; during the deploy ({run['wall']:.1f} s): "
        f"lowest second {low} ({100 * low / steady_rate:.0f}% of steady), seconds below 50%: "
        f"{sum(1 for n in during if n < steady_rate / 2)} of {len(during)}; failed requests {result['failures']} of "
        f"{result['requests']}, p99 {result['p99_ms']} ms")
    say("  answered per second from the deploy's start: " + " ".join(str(n) for n in during))
    return {"most_rps": most, "offered_rps": rate, "steady": round(steady_rate, 1), "lowest": low,
            "lowest_percent": round(100 * low / steady_rate), "during": during, "failures": result["failures"],
            "requests": result["requests"], "p99_ms": result["p99_ms"], "deploy": run}


def warmup_effect(inventory: str, host: dict[str, str], rounds: int) -> dict[str, Any]:
    """Swaps of the Django app on one host under load, without and with warm-up, alternately."""
    source = ROOT / "apps" / "django_demo"
    releases = ("speed-d1", "speed-d2")
    for release in releases:
        deploy("build", "--project", str(source), "--version", release)
    with tempfile.TemporaryDirectory(prefix="deploykit-warm-") as folder:
        warm = Path(folder) / "django_demo"
        shutil.copytree(source, warm, ignore=shutil.ignore_patterns("__pycache__"))
        spec = warm / "deploykit.yml"
        spec.write_text(spec.read_text().replace("  health_timeout: 60\n", "  health_timeout: 60\n  warmup: [/]\n"))
        projects = {"without": str(source), "with": str(warm)}
        common = ("--no-smoke", "--no-swap-report", "--json", "-i", inventory, "--limit", host["name"])
        deploy(*common, "--project", str(source), "--version", releases[0], "--strategy", "recreate")
        found: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
        say(f"\nwarm-up: Django on {host['name']}, 20 req/s on / through nginx, {rounds} swaps each way")
        turn = 1
        for _ in range(rounds):
            for mode in ("without", "with"):
                client = load(host["address"], 20, 16, 300)
                time.sleep(4)
                report = json.loads(deploy(*common, "--project", projects[mode], "--version", releases[turn]).stdout)
                turn = 1 - turn
                time.sleep(4)
                client.send_signal(signal.SIGINT)
                result = json.loads(client.communicate(timeout=120)[0])
                swap = report["swaps"][host["name"]]
                gone = swap["started_at"] + swap["timings"]["old_stopped"] - result["started_at"]
                started = swap["started_at"] + swap["timings"]["started"] - result["started_at"]
                p99 = {int(b["second"]): float(b["p99_ms"]) for b in result["buckets"]}
                after = [p99.get(second, 0.0) for second in (int(gone), int(gone) + 1)]
                window = [p99.get(second, 0.0) for second in range(int(started), int(gone) + 3)]
                found[mode].append({"after_gone_p99_ms": max(after), "swap_max_p99_ms": max(window),
                                    "failures": result["failures"]})
                say(f"  {mode:7} warm-up: p99 {max(after):.0f} ms in the seconds after the old container was gone; "
                    f"highest p99 of the swap's seconds {max(window):.0f} ms; {result['failures']} failed")
    for mode, rows in found.items():
        say(f"  {mode:7} warm-up, median of {len(rows)}: p99 after the old one was gone "
            f"{statistics.median(r['after_gone_p99_ms'] for r in rows):.0f} ms, highest p99 of the swap "
            f"{statistics.median(r['swap_max_p99_ms'] for r in rows):.0f} ms")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench-deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=3, help="lab hosts of the speed run (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="deploys of a release already on the hosts")
    parser.add_argument("--scale", type=int, default=0, help="then grow the fleet to this many hosts and deploy")
    parser.add_argument("--capacity", action="store_true", help="measure what the first host serves during its deploy")
    parser.add_argument("--warmup", type=int, default=0, metavar="ROUNDS",
                        help="swap the Django app this many times without and with warm-up, under load")
    parser.add_argument("--fleet", default="speed", help="the lab fleet's name (default speed)")
    parser.add_argument("--keep", action="store_true", help="leave the fleet running at the end")
    parser.add_argument("--json", dest="json_file", help="also write every figure to this file")
    args = parser.parse_args()
    os.chdir(ROOT)
    figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}}
    say(f"lab fleet {args.fleet}: {args.hosts} hosts, provisioned; releases {', '.join(RELEASES)} of apps/flask_demo")
    inventory, hosts = fleet_up(args.fleet, args.hosts)
    try:
        deploy("provision", "-i", inventory)
        for release in RELEASES:
            deploy("build", *APP, "--version", release)
        figures["speed"] = speed(inventory, args.hosts, args.repeats)
        if args.capacity:
            figures["capacity"] = {
                "light": capacity(inventory, hosts[0], LIGHT, "gunicorn gthread 1x4"),
                "default": capacity(inventory, hosts[0], (), "the app's own setup: gunicorn sync, 4 processes")}
        if args.warmup:
            figures["warmup"] = warmup_effect(inventory, hosts[0], args.warmup)
        if args.scale > args.hosts:
            say(f"\ngrowing the fleet to {args.scale} hosts, provisioning them")
            began = time.monotonic()
            inventory, hosts = fleet_up(args.fleet, args.scale)
            say(f"  up in {time.monotonic() - began:.0f} s")
            began = time.monotonic()
            deploy("provision", "-i", inventory)
            say(f"  provisioned in {time.monotonic() - began:.0f} s")
            figures["scale"] = speed(inventory, args.scale, args.repeats)
            memory = host_memory(args.fleet)
            figures["scale"]["host_memory_mib"] = memory
            say(f"\nmemory of a lab host (the light app deployed): median {statistics.median(memory):.0f} MiB, "
                f"max {max(memory):.0f} MiB, {sum(memory) / 1024:.1f} GiB for {len(memory)}")
            small, large = figures["speed"], figures["scale"]
            say(f"{args.scale} hosts against {args.hosts}: wall {large['wall_median']:.1f} s against "
                f"{small['wall_median']:.1f} s ({large['wall_median'] / small['wall_median']:.1f}x); controller CPU "
                f"{large['cpu_median']:.1f} s against {small['cpu_median']:.1f} s "
                f"({(large['cpu_median'] - small['cpu_median']) / (args.scale - args.hosts):.2f} s per added host)")
    finally:
        if args.json_file:
            Path(args.json_file).write_text(json.dumps(figures, indent=1) + "\n")
        if not args.keep:
            deploy("lab", "down", "--fleet", args.fleet)


if __name__ == "__main__":
    main()
