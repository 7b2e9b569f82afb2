"""An app's hooks (deploykit.yml `hooks`): commands run on the controller, in the app's directory, around a
build, a deploy and a rollback. A hook that fails stops what it was part of, with its output."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from deploy_tool.appspec import AppSpec
from deploy_tool.errors import DeployError

TIMEOUT = 600  # seconds a hook may take


def run_hook(spec: AppSpec, name: str, emit: Callable[[str], None] | None = None, **env: str) -> None:
    """Run hooks.NAME (sh -c) with DEPLOYKIT_* variables telling what is going on; nothing when unset."""
    command = spec[f"hooks.{name}"]
    if not command:
        return
    if emit:
        emit(f"hook {name}: {command}")
    variables = {f"DEPLOYKIT_{key.upper()}": value for key, value in env.items()}
    try:
        result = subprocess.run(["sh", "-c", command], cwd=spec.directory, env={**os.environ, **variables},
                                capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"hook {name} did not end within {TIMEOUT} s: {command}") from exc
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-20:])
        raise DeployError(f"hook {name} failed (exit {result.returncode}): {command}" + (f"\n{tail}" if tail else ""),
                          hint=f"fix the hook or its command (hooks.{name} in {spec.directory}/deploykit.yml)")
    if emit and output:
        for line in output.splitlines()[-20:]:
            emit(f"  {line}")
