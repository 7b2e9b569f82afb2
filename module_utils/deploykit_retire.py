"""Blue-green's second half, for library/deploykit_retire.py, in one call on the host: once nginx sends requests
to the new container, wait until nginx's workers of the previous configuration are gone (they may still send to
the old port), then stop the previous containers gracefully (their stop timeout of drain) and remove them. No
Ansible in here: tests/test_retire.py uses it as is."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ansible.module_utils.deploykit_containers import Docker
from ansible.module_utils.deploykit_host import RunCommand as Run

# what nginx names a worker of a configuration it reloaded away from, until its connections are done
OLD_WORKERS = "nginx: worker process is shutting down"
POLL = 0.2  # seconds between two looks for them


def old_nginx_workers(run: Run) -> bool:
    """Whether the host has nginx workers of a previous configuration (pgrep finds one)."""
    rc, _, _ = run(["pgrep", "-f", OLD_WORKERS])
    return int(rc) == 0


def retire(docker: Docker, run: Run, names: list[str], stop_timeout: int, wait: float, check: bool,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Wait at most `wait` seconds for nginx's old workers to be gone (then go on: they finish on their own), then
    stop (`docker stop --time stop_timeout`) and remove (with their anonymous volumes) those of the containers
    `names` that are there; a container already gone is left out (a run again). {changed, retired, waited}; in
    check mode nothing is waited for or changed."""
    present = [name for name in names if docker.inspect(name) is not None]
    began = clock()
    if present and not check:
        while old_nginx_workers(run) and clock() - began < wait:
            sleep(POLL)
    waited = round(clock() - began, 2)
    if not check:
        for name in present:
            docker("stop", "--time", str(stop_timeout), name)
            docker("rm", "--volumes", name)
    return {"changed": bool(present), "retired": present, "waited": waited}
