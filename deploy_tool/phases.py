"""Where a deploy's time goes: the controller's own phases, and the deploy playbook's tasks grouped by what they do
(`deploy --json` gives them as `phases`, the progress output and the swap report as a line and a table)."""

from __future__ import annotations

import time
from pathlib import PurePath

from deploy_tool.playbook import RunOutcome, TaskWindow

# the app role's task files, by what they do (roles/app/tasks/)
APP_TASK_FILES = {"preflight": "host checks", "image": "ready host, ship image", "ship": "ready host, ship image",
                  "static": "static files", "retire": "retire"}


def playbook_phase(task: TaskWindow) -> str:
    """What part of a deploy a task of playbooks/deploy.yml is."""
    action = task.action.rsplit(".", 1)[-1]
    if action == "deploykit_lock":
        return "fleet lock"
    if action == "deploykit_swap":
        return "swap"
    if action == "deploykit_probe":
        return "check through nginx"
    if task.role == "nginx":
        return "nginx"
    if task.role == "app":
        if action == "docker_container":
            return "release command"
        return APP_TASK_FILES.get(PurePath(task.path.split(":", 1)[0]).stem, "host checks")
    return "other tasks"


def playbook_phases(outcome: RunOutcome) -> dict[str, float]:
    """Seconds per phase of a run (a task counts from its first host's start to its last host's end), and
    `ansible` for the rest of the run: its start, the connections, the moments between tasks."""
    phases: dict[str, float] = {}
    for task in outcome.tasks:
        name = playbook_phase(task)
        phases[name] = phases.get(name, 0.0) + max(0.0, task.end - task.start)
    if outcome.ended > outcome.started:
        phases["ansible"] = max(0.0, outcome.ended - outcome.started - sum(phases.values()))
    return {name: round(seconds, 2) for name, seconds in phases.items()}


class Stopwatch:
    """The deploy's phases, in the order they ran: the controller's, counted with `since`, and the playbook's,
    added with `add`; `total` gives them with the whole deploy's time."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.phases: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0.0) + seconds, 2)

    def since(self, name: str, began: float) -> None:
        """Count the time from `began` (time.monotonic()) to now as `name`."""
        self.add(name, time.monotonic() - began)

    def total(self) -> dict[str, float]:
        return {**self.phases, "total": round(time.monotonic() - self.began, 2)}


def phases_line(phases: dict[str, float]) -> str:
    return "TIME: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
