"""The host's side of a swap, for library/deploykit_swap.py: which processes and sockets belong to a container (by
cgroup, /proc/net/tcp and /proc/PID/fd), who listens on a port (ss: listeners, foreign_listeners, listens,
wait_listening), pausing and resuming processes, and the drain guard (PortGuard): a listener that joins a port's
SO_REUSEPORT group so the port is never left without one while an old container drains. Linux only; no Ansible in
here: ss runs through the `run` it is given, the AnsibleModule's run_command on a host (tests/test_port_guard.py
and tests/test_swap_module.py use it as is)."""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

# how a command is run: (argv) -> (rc, stdout, stderr), as AnsibleModule.run_command
RunCommand = Callable[[list[str]], tuple[int, str, str]]


def docker(run: RunCommand, *args: str, bound: int) -> tuple[int, str, str]:
    """`docker ARGS` through `run`, stopped after `bound` seconds: a hung engine raises TimeoutError naming the call,
    instead of holding the deploy (and its lock) until the play's own timeout."""
    rc, out, err = run(["timeout", "--kill-after", "5", str(bound), "docker", *args])
    if rc in (124, 137):  # timeout(1): the call was stopped at its bound (137: killed after the grace)
        raise TimeoutError(f"docker {' '.join(args[:2])} did not answer within {bound} s: is the Docker engine on "
                           "this host hung? (systemctl status docker)")
    return rc, out, err


class EngineError(OSError):
    """The Docker engine's API could not be asked (no socket, refused, no answer within the bound)."""


class _EngineConnection(http.client.HTTPConnection):
    """HTTP over the engine's unix socket."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def engine_socket() -> str:
    """Where the Docker engine's API listens: DOCKER_HOST when it names a unix socket, else docker's default."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        raise EngineError(f"DOCKER_HOST={host}: deploykit asks the Docker engine on its unix socket only (unset "
                          "DOCKER_HOST on the host, or point it at unix:///var/run/docker.sock)")
    return host[len("unix://"):] if host else "/var/run/docker.sock"


def engine_get(path: str, bound: float, **query: Any) -> tuple[int, Any]:
    """GET `path` of the Docker Engine API (e.g. /containers/NAME/json) with `query` (a dict or list value is sent
    as JSON, as its `filters` want): (HTTP status, the decoded answer, None when it is not JSON). The reads of a
    swap go this way: about 1 ms each, where a `docker inspect` starts a program of ~25 ms CPU, and the swap
    polls its new container's state every interval. Raises EngineError, naming the call, when the engine cannot
    be reached or does not answer within `bound` seconds."""
    encoded = {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in query.items()}
    target = urllib.parse.quote(path, safe="/:@") + ("?" + urllib.parse.urlencode(encoded) if encoded else "")
    where = engine_socket()
    connection = _EngineConnection(where, bound)
    try:
        connection.request("GET", target)
        answer = connection.getresponse()
        body = answer.read()
    except TimeoutError as exc:
        raise EngineError(f"the Docker engine did not answer GET {path} within {bound} s: is it hung? (systemctl "
                          "status docker)") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise EngineError(f"the Docker engine at {where} cannot be asked (GET {path}: {exc}): is it running? "
                          "(systemctl status docker)") from exc
    finally:
        connection.close()
    try:
        return answer.status, json.loads(body)
    except ValueError:
        return answer.status, None


def read_text(path: str) -> str | None:
    """The text of the file `path`, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def replace_file(path: str, content: str, mode: int, check: bool) -> bool:
    """`content` in `path`, root's, with `mode`; written aside, fsynced and renamed in, so that a reader meanwhile
    (a container starting, nginx reloading) reads the old file or the new one, never half of one. Whether anything
    was (or, in check mode, would be) changed."""
    try:
        info = os.stat(path)
        if read_text(path) == content and (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, mode):
            return False
    except FileNotFoundError:
        pass
    if check:
        return True
    partial = f"{path}.{os.getpid()}.partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.chown(partial, 0, 0)
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return True


class HostBusy(Exception):
    """Another process held the lock for longer than the wait."""


@contextlib.contextmanager
def exclusive(path: str, wait: float) -> Iterator[float]:
    """Hold an flock on `path` (made, with its folder) for the block, waiting up to `wait` seconds for its holder;
    yields the seconds waited. One swap of an app at a time on a host: a deploy stopped mid-swap leaves its swap
    module running on the host, and the next deploy's swap must not race it. The file names its holder's pid."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a+") as stream:
        began = time.monotonic()
        while True:
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - began >= wait:
                    stream.seek(0)
                    raise HostBusy(f"another process (pid {stream.read().strip() or '?'}) held {path} for "
                                   f"{wait:.0f} s") from None
                time.sleep(0.2)
        stream.seek(0)
        stream.truncate()
        stream.write(f"{os.getpid()}\n")
        stream.flush()
        yield time.monotonic() - began


def in_containers(pid, container_ids):
    """Whether process `pid` runs in one of the containers (by its cgroup)."""
    try:
        with open(f"/proc/{pid}/cgroup") as stream:
            cgroup = stream.read()
    except OSError:
        return False
    return any(container in cgroup for container in container_ids)


def listeners(run: RunCommand, port: int) -> list[tuple[str, int, list[str]]] | None:
    """[(address, uid, [pid])] of the sockets listening on TCP `port`, or None when ss is missing."""
    rc, out, _ = run(["ss", "-Hltnep", f"sport = :{port}"])
    if rc != 0:
        return None
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        uid = re.search(r"\buid:(\d+)", line)  # ss prints it only when it is not root's
        found.append((fields[3].rsplit(":", 1)[0].strip("[]"), int(uid.group(1)) if uid else 0,
                      re.findall(r'"[^"]+",pid=(\d+)', line)))
    return found


def foreign_listeners(run: RunCommand, port: int, own: Callable[[], list[str]]) -> list[str]:
    """Processes listening on `port` that are not in one of the containers `own()` (by cgroup; asked only when
    ss answers), as "NAME (pid PID)"."""
    rc, out, _ = run(["ss", "-Hltnp", f"sport = :{port}"])
    if rc != 0:
        return []  # no ss: the new container's bind reports a conflict instead
    ids = own()
    return sorted(set(f"{name} (pid {pid})" for name, pid in re.findall(r'"([^"]+)",pid=(\d+)', out)
                      if not in_containers(pid, ids)))


def listens(run: RunCommand, port: int, ids: Callable[[], list[str]]) -> bool | None:
    """Whether a process of the containers `ids()` (asked only when ss answers) listens on `port`; None when ss
    cannot tell."""
    found = listeners(run, port)
    if found is None:
        return None
    containers = ids()
    return any(in_containers(pid, containers) for _, _, pids in found for pid in pids)


def wait_listening(run: RunCommand, ids: list[str], port: int, timeout: float) -> bool:
    """Wait until a process of the containers `ids` listens on `port`; False at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listens(run, port, lambda: ids):
            return True
        time.sleep(0.1)
    return False


LISTEN = "0A"  # the state column of /proc/net/tcp


def port_sockets(port):
    """{inode: state} of the TCP sockets on local `port` in this network namespace (/proc/net/tcp and tcp6)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as stream:
                next(stream)
                for line in stream:
                    fields = line.split()
                    if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        found[fields[9]] = fields[3]
        except (OSError, StopIteration, ValueError):
            continue
    return found


def held_sockets(pids, port):
    """States of the sockets of `port` that the processes `pids` hold open, {inode: state}."""
    sockets = port_sockets(port)
    held = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            inode = target[8:-1] if target.startswith("socket:[") else None
            if inode in sockets:
                held[inode] = sockets[inode]
    return held


def container_pids(container_ids):
    """Pids of the processes in the containers."""
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and in_containers(pid, container_ids)]


def process_state(pid):
    """The state letter of /proc/PID/stat (R, S, D, T...), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def pause(pids, timeout=0.5):
    """SIGSTOP the processes and wait until none runs; False (and SIGCONT) when one did not stop in time."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(process_state(pid) in ("T", "t", "Z", "X", None) for pid in pids):
            return True
        time.sleep(0.005)
    resume(pids)
    return False


def resume(pids):
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)


class PortGuard:
    """A listener that joins a port's SO_REUSEPORT group and never accepts, in a child process of its own.

    While the old container drains, the port must not be left without a listener: should the new container
    die meanwhile, its queued connections would be reset and new ones refused. The guard takes its share of
    new connections, and the new container's queue when that one closes (tcp_migrate_req). Every `period`
    seconds, when another listener is on the port, it closes its listener (the queue moves to the others: the
    kernel picks by the connection's hash, so a fresh guard listener opened first would get the same ones
    back) and listens on a fresh one, bound before. While the new container lives, a connection waits on the
    guard about `period`; when it died, they wait on the guard until the old release listens again.

    The kernel groups only sockets of the same owner: the child takes the listeners' uid before it binds.
    It is made while the new container is under its gate: bound, not listening (it takes nothing yet), so that
    start() only has to listen, right before the old container's stop signal. A guard that joined after the
    signal left the port without a listener for as long as it took to make (a new container dying in the
    first milliseconds of the drain had its connections refused: 99 in one test run).

    One race is left: should the other listener close between the guard's look (ss) and its close, what the
    guard held has nowhere to go and is reset (nginx sends a GET again). Listening on the fresh socket before
    the close would keep it, but the kernel would then hand the same connections back to the guard at every
    rotation, and they would wait for the whole drain.
    """

    def __init__(self, address, port, uid, period=0.2, backlog=4096):
        if address == "*":
            raise ValueError("a dual-stack wildcard listener")
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        ready, self.ready_w = os.pipe()
        self.go_r, go = os.pipe()
        self.stop_r, stop = os.pipe()
        self.pid: int | None = os.fork()
        if self.pid == 0:  # the guard
            os.close(ready)
            os.close(go)
            os.close(stop)
            status = 1
            try:
                if uid != os.geteuid():
                    os.setuid(uid)
                current = self.bound(family, address, port)
                os.write(self.ready_w, b"ok")
                if not os.read(self.go_r, 1):  # closed before start(): it never listens
                    os._exit(0)
                current.listen(backlog)
                os.write(self.ready_w, b"on")
                while not select.select([self.stop_r], [], [], period)[0]:
                    if self.others_listen(port):
                        # bound beforehand, listening right after the close: the port is without this
                        # listener for two system calls only (if the other one dies then, its queue
                        # has somewhere to go)
                        fresh = self.bound(family, address, port)
                        current.close()
                        fresh.listen(backlog)
                        current = fresh
                current.close()
                status = 0
            except Exception as exc:  # told to the parent through the ready pipe
                os.write(self.ready_w, (f"{type(exc).__name__}: {exc}").encode()[:200])
            finally:
                os._exit(status)
        os.close(self.ready_w)
        os.close(self.go_r)
        os.close(self.stop_r)
        self.go_w, self.stop_w, self.ready_r = go, stop, ready
        self.listening = False
        answer = os.read(ready, 256).decode()
        if answer != "ok":
            self.close()
            raise OSError(answer or "the guard process ended")

    def start(self):
        """Listen: join the port's group (a bound guard takes no connection before). About a millisecond."""
        if self.pid and not self.listening:
            os.write(self.go_w, b"g")
            answer = os.read(self.ready_r, 256).decode()
            if answer != "on":
                self.close()
                raise OSError(answer or "the guard process ended")
            self.listening = True

    @staticmethod
    def bound(family, address, port):
        """A socket bound to the port in its SO_REUSEPORT group; not listening, so nothing lands on it yet."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address, port))
        except OSError:
            sock.close()
            raise
        return sock

    @classmethod
    def listen(cls, family, address, port, backlog):
        sock = cls.bound(family, address, port)
        try:
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return sock

    @staticmethod
    def others_listen(port):
        """Whether a socket besides the guard's listens on `port` (False when ss cannot tell)."""
        try:
            out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return False
        return len(out.splitlines()) > 1

    def close(self):
        """Close the guard's listener (what it holds moves to the listeners that remain); idempotent."""
        if self.pid:
            for fd in (self.go_w, self.stop_w, self.ready_r):
                os.close(fd)
            os.waitpid(self.pid, 0)
            self.pid = None
