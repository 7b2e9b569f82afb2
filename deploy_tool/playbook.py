"""Running playbooks through ansible-runner.

A run is described as data (`PlaybookRun`) and turned into ansible-runner's keyword arguments by a pure
function, so what would run can be tested without running it. Events become progress lines through a
callback; failures become one DeployError that names the host, the task and the message.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from deploy_tool.errors import DeployError
from deploy_tool.inventory import check_limit, inventory_slug
from deploy_tool.project import Project

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class PlaybookRun:
    playbook: str
    inventory: Path
    extravars: dict[str, Any] = field(default_factory=dict)
    limit: str | None = None
    check: bool = False
    # extra variables files (-e @FILE), read by Ansible itself: an ansible-vault encrypted one stays encrypted on
    # disk, decrypted with the vault password file (its path only is passed, never the password)
    vars_files: tuple[Path, ...] = ()
    vault_password_file: Path | None = None
    timeout: int = 3600  # seconds the whole run may take: a hung host or engine must not hold the lock forever
    capture: tuple[str, ...] = ("deploykit_swap", "deploykit_bench")  # the modules whose results are kept per host

    def __post_init__(self) -> None:
        check_limit(self.limit)

    def private_data_dir(self, project: Project) -> Path:
        """ansible-runner's working folder, one per inventory: runs on two fleets must not share it
        (it holds the extra variables file of the run)."""
        return project.state_dir / "runner" / inventory_slug(self.inventory)

    def runner_kwargs(self, project: Project) -> dict[str, Any]:
        playbook = project.playbooks_dir / self.playbook
        words = ["--check", "--diff"] if self.check else []
        for path in self.vars_files:
            words += ["-e", f"@{path}"]
        if self.vault_password_file:
            words += ["--vault-password-file", str(self.vault_password_file)]
        cmdline = shlex.join(words) if words else None
        bindir = Path(sys.executable).parent
        kwargs: dict[str, Any] = {
            "private_data_dir": str(self.private_data_dir(project)),
            "project_dir": str(project.root),
            "playbook": str(playbook),
            "inventory": str(self.inventory),
            "extravars": dict(self.extravars),
            "envvars": {
                "ANSIBLE_CONFIG": str(project.ansible_cfg),
                "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            },
            "rotate_artifacts": 20,
            "quiet": True,
            "suppress_env_files": True,  # nothing of a run is written for the next one to read (see run_playbook)
            "timeout": self.timeout,
        }
        if self.limit:
            kwargs["limit"] = self.limit
        if cmdline:
            kwargs["cmdline"] = cmdline
        return kwargs


@dataclass
class HostFailure:
    host: str
    task: str
    message: str


@dataclass(frozen=True)
class TaskWindow:
    """One task of a run, on all of its hosts: from its first host's start to its last host's end (seconds since
    the epoch), with what tells its part of the work (its role, its action, the task file it is written in)."""
    name: str
    role: str
    action: str
    path: str
    start: float
    end: float


@dataclass
class RunOutcome:
    status: str
    rc: int
    stats: dict[str, dict[str, int]]
    failures: list[HostFailure]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: list[TaskWindow] = field(default_factory=list)  # in the order they ran
    started: float = 0.0  # the run's start and end on the controller (seconds since the epoch)
    ended: float = 0.0

    def recap(self) -> dict[str, dict[str, int]]:
        """Per host: ok, changed, failed, unreachable (ansible-runner calls the last one `dark`)."""
        names = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable",
                 "skipped": "skipped"}
        hosts = sorted({host for counts in self.stats.values() for host in counts})
        return {host: {label: self.stats.get(key, {}).get(host, 0) for key, label in names.items()}
                for host in hosts}

    def total_changed(self) -> int:
        return sum(self.stats.get("changed", {}).values())


class PlaybookFailed(DeployError):
    """A playbook run that failed on some host; carries what every host reported."""

    def __init__(self, message: str, hint: str, outcome: RunOutcome) -> None:
        super().__init__(message, hint)
        self.outcome = outcome


def _result_message(result: dict[str, Any]) -> str:
    for key in ("msg", "stderr", "module_stderr", "stdout"):
        value = result.get(key)
        if value:
            text = str(value).strip()
            return "\n".join(text.splitlines()[-8:])
    return "no message"


def _detail(result: dict[str, Any]) -> str:
    """What a host's swap or benchmark did, on its progress line as soon as that host is done."""
    if result.get("timings"):
        phases = ", ".join(f"{step.replace('_', ' ')} {seconds:.1f} s" for step, seconds in result["timings"].items())
        return f" ({result.get('container')}: {phases})"
    if "rps" in result and "failures" in result:
        return f" ({result['rps']} req/s, {result['failures']} failed, p99 {result['p99_ms']} ms)"
    if result.get("results") and all("rps" in r for r in result["results"]):
        return " (" + "; ".join(f"{(r.get('item') or {}).get('name', '?')}: {r['rps']} req/s, {r['failures']} failed"
                                for r in result["results"]) + ")"
    return ""


class ProgressPrinter:
    """Turns ansible-runner events into one line per task and per host result."""

    def __init__(self, emit: ProgressCallback,
                 capture: tuple[str, ...] = ("deploykit_swap", "deploykit_bench")) -> None:
        self.emit = emit
        self.capture = capture
        self.failures: list[HostFailure] = []
        self.results: dict[str, dict[str, Any]] = {}  # per host: the result of the captured modules
        self.tasks: dict[str, TaskWindow] = {}  # by task uuid, in the order they ran
        self._last_task = ""

    def time(self, data: dict[str, Any]) -> None:
        """Widen the task's window by this host's result."""
        try:
            start = datetime.fromisoformat(data["start"]).timestamp()
            end = datetime.fromisoformat(data["end"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return
        key = data.get("task_uuid") or data.get("task", "")
        known = self.tasks.get(key)
        if known:
            start, end = min(start, known.start), max(end, known.end)
        self.tasks[key] = TaskWindow(data.get("task", ""), data.get("role", "") or "",
                                     data.get("resolved_action") or data.get("task_action", ""),
                                     data.get("task_path", "") or "", start, end)

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if kind == "playbook_on_play_start":
            self.emit(f"PLAY {data.get('play', '')}")
        elif kind == "playbook_on_task_start" and data.get("task", "") != self._last_task:
            self._last_task = data.get("task", "")
            self.emit(f"  task: {self._last_task}")
        if kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            self.time(data)
        if kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            host = data.get("host", "?")
            result = data.get("res", {}) or {}
            if data.get("task_action") in self.capture:
                self.results[host] = {k: v for k, v in result.items() if not k.startswith("_")}
            if kind == "runner_on_ok":
                self.emit(f"    {host}: {'changed' if result.get('changed') else 'ok'}{_detail(result)}")
            elif kind == "runner_on_failed" and data.get("ignore_errors"):
                self.emit(f"    {host}: failed (ignored)")
            else:
                word = "UNREACHABLE" if kind == "runner_on_unreachable" else "FAILED"
                message = _result_message(result)
                self.failures.append(HostFailure(host, data.get("task", ""), message))
                self.emit(f"    {host}: {word}: {message}")
        return True


def run_playbook(run: PlaybookRun, project: Project, emit: ProgressCallback) -> RunOutcome:
    import ansible_runner  # imported here: slow to import, and not needed by every command

    if not run.inventory.exists():
        raise DeployError(f"inventory {run.inventory} does not exist",
                          hint="for the lab fleet run `deploy lab up --hosts 3` first")
    printer = ProgressPrinter(emit, run.capture)
    run.private_data_dir(project).mkdir(parents=True, exist_ok=True)
    # ansible-runner reads env/extravars and env/cmdline whenever they exist, from whichever run wrote them: a
    # provision after a deploy ran with that deploy's variables and its vault password file, and a run after
    # `provision --check` in check mode. Each run passes all of its own; none is left for another.
    for name in ("extravars", "cmdline", "envvars", "passwords", "settings", "ssh_key"):
        (run.private_data_dir(project) / "env" / name).unlink(missing_ok=True)
    started = time.time()
    result = ansible_runner.run(event_handler=printer, **run.runner_kwargs(project))
    outcome = RunOutcome(status=result.status, rc=result.rc, stats=result.stats or {}, failures=printer.failures,
                         results=printer.results, tasks=list(printer.tasks.values()), started=started,
                         ended=time.time())
    if result.status == "timeout":
        raise PlaybookFailed(f"playbook {run.playbook} did not finish within {run.timeout} s: it was stopped",
                             hint=f"see which task hung: {result.config.artifact_dir}/stdout", outcome=outcome)
    if result.rc != 0 or result.status != "successful":
        if printer.failures:
            detail = "\n".join(f"  {f.host}: {f.task}: {f.message}" for f in printer.failures)
        else:
            detail = "\n".join(result.stdout.read().splitlines()[-15:])
        raise PlaybookFailed(f"playbook {run.playbook} {result.status} (rc={result.rc}):\n{detail}",
                             hint=f"full output: {result.config.artifact_dir}/stdout", outcome=outcome)
    return outcome
