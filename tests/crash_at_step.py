"""Crash a new release's container at a step of its swap: run on a lab host (as root, by the tests, through ssh).

    python3 - PROGRESS_FILE RELEASE STEP[,STEP...] TIMEOUT < crash_at_step.py

It removes the swap's progress file (library/deploykit_swap.py `progress_file`), says `ready`, then follows the
file the next swap writes (looking every 2 ms): at `started` it learns the new container's main process (the
container's name holds the release), and at the first of the steps named it kills that process with SIGKILL
(the kernel then kills every process of the container: a crash, nothing graceful). It prints one JSON line
saying whether it fired, at which step, and how long after that step's line appeared; it gives up after TIMEOUT
seconds.
"""

import json
import os
import signal
import subprocess
import sys
import time

POLL = 0.002  # seconds between looks at the progress file


def lines(path):
    try:
        with open(path) as handle:
            return [json.loads(line) for line in handle if line.endswith("\n")]
    except FileNotFoundError:
        return []


def main():
    path, release, steps, timeout = sys.argv[1], sys.argv[2], sys.argv[3].split(","), float(sys.argv[4])
    if os.path.exists(path):
        os.remove(path)
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    pid = container = None
    while time.monotonic() < deadline:
        for line in lines(path):
            if line["step"] == "started" and pid is None and release in line.get("container", ""):
                container = line["container"]
                pid = int(subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", container],
                                         capture_output=True, text=True, check=True).stdout)
            if line["step"] in steps and pid:
                seen = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                # seen at most POLL after the line was written, killed `kill_ms` after it was seen
                print(json.dumps({"fired": True, "step": line["step"], "container": container, "pid": pid,
                                  "kill_ms": round((time.monotonic() - seen) * 1000, 2),
                                  "steps": [entry["step"] for entry in lines(path)]}), flush=True)
                return 0
        time.sleep(POLL)
    print(json.dumps({"fired": False, "container": container, "steps": [entry["step"] for entry in lines(path)]}),
          flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
