"""Commands deploykit runs on the controller, each with a bound: a hung Docker engine, SSH or pip must not hold
a deploy (and its lock) forever. A command past its bound is killed, and the error names what hung. And commands
it runs in a container of the controller's engine (a lab host, the lab registry)."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from deploy_tool.errors import DeployError


def run(argv: list[str], what: str, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """subprocess.run with a bound; past it, one DeployError naming `what` and the command."""
    try:
        return subprocess.run(argv, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"{what} did not finish within {timeout:.0f} s: {' '.join(argv[:4])}",
                          hint="it was stopped; see whether that command hangs by hand") from exc


def finish(process: subprocess.Popen[Any], what: str, timeout: float) -> tuple[Any, Any]:
    """Popen.communicate with a bound; past it the process is killed, and one DeployError names `what`."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        process.kill()
        process.communicate()
        raise DeployError(f"{what} did not finish within {timeout:.0f} s",
                          hint="it was stopped; see whether that command hangs by hand") from exc


# What the engine answers (exit code 126, "OCI runtime exec failed: ... waiting for init preliminary setup: read
# init-p: connection reset by peer") when runc's init for the exec'd process died before the command started: it
# never ran, so trying it again is safe. Seen under load on this kind of machine. Other exec failures (no such
# file, permission denied) are not tried again.
EXEC_NOT_STARTED = "read init-p"


def exec_in(container: Any, command: list[str], what: str = "", tries: int = 3) -> str:
    """`command` run in a running container (Docker SDK), its output; one DeployError naming `what` (the command
    itself if not given) if it fails. A command the runtime could not start is tried again, `tries` times in all."""
    for attempt in range(1, tries + 1):
        result = container.exec_run(command)
        output: str = result.output.decode(errors="replace")
        if result.exit_code == 0:
            return output
        if not (result.exit_code == 126 and EXEC_NOT_STARTED in output and attempt < tries):
            raise DeployError(f"{what or ' '.join(command)} failed in container {container.name}: "
                              f"{output.strip()[-300:]}")
        time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")
