"""Commands deploykit runs on the controller, each with a bound: a hung Docker engine, SSH or pip must not hold
a deploy (and its lock) forever. A command past its bound is killed, and the error names what hung."""

from __future__ import annotations

import subprocess
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
