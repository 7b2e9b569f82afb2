"""The app's containers, for library/deploykit_swap.py: their labels, what a container is (Container), how the new one
is named and run (container_name, spec_hash, docker_run_argv), and the host's Docker engine, bounded (Docker: its
reads through the engine's API, its changes through the docker CLI). The errors
of a swap (SwapError) are raised from here and the other deploykit_* parts of the swap."""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from ansible.module_utils.deploykit_host import EngineError, docker, engine_get

LABEL_APP = "io.deploykit.app"
LABEL_RELEASE = "io.deploykit.release"
LABEL_SPEC = "io.deploykit.spec"
LABEL_PROTOCOL = "io.deploykit.protocol"
LABEL_PORT = "io.deploykit.port"
LABEL_VARIANT = "io.deploykit.variant"  # set by the app role (its labels), as LABEL_STATIC
LABEL_STATIC = "io.deploykit.static"
LABEL_SERVER_NAMES = "io.deploykit.server_names"  # comma-separated
LABEL_HEALTH_PATH = "io.deploykit.health_path"
LABEL_TLS = "io.deploykit.tls"  # JSON: where nginx reads the app's certificate and key (playbooks/deploy.yml)
DOCKER_BOUND = 120  # seconds any docker call of the swap may take (a stop: plus its stop_timeout)

Params = dict[str, Any]  # the swap module's parameters (its ARGUMENT_SPEC)


class Container(NamedTuple):
    """One of the app's containers on the host, as its labels and docker inspect say."""

    name: str
    running: bool
    spec: str | None  # the hash of its image and settings (LABEL_SPEC)
    release: str | None
    protocol: str | None  # what nginx speaks to it
    port: int | None
    restart: str  # its restart policy
    labels: dict[str, str] = {}  # all of its labels, as docker inspect gives them


class SwapError(Exception):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def last_words(logs: str | None, lines: int = 3) -> str:
    """The end of a container's log, for an error message: its last non-empty lines (the launcher's and the
    app's own reason, such as the status its health path gave), or nothing."""
    said = [line.strip() for line in (logs or "").splitlines() if line.strip()][-lines:]
    return ("; its last words: " + " | ".join(said))[:800] if said else ""


def spec_hash(params: Params, image_id: str) -> str:
    """What makes two containers the same: the image id and every run setting."""
    keys = ("env", "env_file", "user", "read_only", "tmpfs", "cap_drop", "security_opts", "restart_policy",
            "labels", "stop_timeout") + tuple(  # the options added later, only when set: hashes stay as they were
        key for key in ("volumes", "limits") if params.get(key))
    data = json.dumps({"image": image_id, **{k: params[k] for k in keys}}, sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:12]


def container_name(app: str, release: str, digest: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in release)
    return f"{app}-{safe}-{digest[:6]}"


def docker_run_argv(params: Params, name: str, digest: str, port: int | None = None) -> list[str]:
    """`docker run` of the new container, listening on `port` (default the health port), as data."""
    port = port or params["health"]["port"]
    # no restarts until it passed its gate: a crashing release must show as exited, not loop
    argv = ["docker", "run", "--detach", "--name", name, "--network", "host",
            "--restart", "no", "--stop-timeout", str(params["stop_timeout"]),
            "--label", f"{LABEL_APP}={params['app']}", "--label", f"{LABEL_RELEASE}={params['release']}",
            "--label", f"{LABEL_SPEC}={digest}",
            "--label", f"{LABEL_PROTOCOL}={params['health']['protocol']}",
            "--label", f"{LABEL_PORT}={port}"]
    for key, value in sorted(params["labels"].items()):
        argv += ["--label", f"{key}={value}"]
    if params["user"]:
        argv += ["--user", params["user"]]
    if params["read_only"]:
        argv.append("--read-only")
    for mount in params["tmpfs"]:
        argv += ["--tmpfs", mount]
    for volume in params["volumes"]:
        argv += ["--volume", volume]
    for limit, flag in (("memory", "--memory"), ("cpus", "--cpus"), ("pids", "--pids-limit")):
        value = str(params["limits"].get(limit) or "")
        if value not in ("", "0"):
            argv += [flag, value]
    for cap in params["cap_drop"]:
        argv += ["--cap-drop", cap]
    for opt in params["security_opts"]:
        argv += ["--security-opt", opt]
    if params["env_file"]:
        argv += ["--env-file", params["env_file"]]
    env = dict(params["env"], DEPLOYKIT_INSTANCE=name, DEPLOYKIT_PORT=str(port))
    for key, value in sorted(env.items()):
        argv += ["--env", f"{key}={value}"]
    return argv + [params["image"]]


class Docker:
    """The Docker engine of the host, for the app `params["app"]`: its reads (inspect, lists) through the engine's
    API on its unix socket (engine_get: the swap polls them), its changes through the docker CLI, each call
    bounded; `docker("stop", ...)` is one CLI call; the methods are the calls the swap makes more than once."""

    def __init__(self, module: Any, params: Params) -> None:
        self.module = module
        self.params = params

    def __call__(self, *args: str, check: bool = True) -> tuple[int, str, str]:
        """A docker CLI call, bounded: a hung engine ends the swap with an error naming the call, instead of holding
        the deploy (and its lock) until the play's own timeout. `docker stop` may take its drain time."""
        bound = DOCKER_BOUND + (self.params["stop_timeout"] if args[0] == "stop" else 0)
        try:
            rc, out, err = docker(self.module.run_command, *args, bound=bound)
        except TimeoutError as exc:
            raise SwapError(str(exc)) from exc
        if check and rc != 0:
            raise SwapError(f"docker {' '.join(args[:2])} failed: {(err or out).strip()}")
        return rc, out, err

    def get(self, path: str, **query: Any) -> tuple[int, Any]:
        """A read of the engine's API (engine_get), bounded as a CLI call: (status, answer)."""
        try:
            status, answer = engine_get(path, DOCKER_BOUND, **query)
        except EngineError as exc:
            raise SwapError(str(exc)) from exc
        return status, answer

    def inspect(self, name: str) -> dict[str, Any] | None:
        """What `docker inspect NAME` says of a container, or None when there is none of that name."""
        status, info = self.get(f"/containers/{name}/json")
        if status == 404:
            return None
        if status != 200 or not isinstance(info, dict):
            raise SwapError(f"the Docker engine answered {status} to an inspect of {name}: {info}")
        return info

    def listed(self, stopped: bool = True, **filters: list[str]) -> list[dict[str, Any]]:
        """The containers that match `filters`, the stopped ones too unless `stopped` is False (as `docker ps
        [--all] --filter`)."""
        status, found = self.get("/containers/json", all=int(stopped), filters=filters)
        if status != 200 or not isinstance(found, list):
            raise SwapError(f"the Docker engine answered {status} to a list of containers: {found}")
        return found

    def app_containers(self) -> list[Container]:
        """This app's containers (Container), oldest first."""
        labelled = self.listed(label=[f"{LABEL_APP}={self.params['app']}"])
        # a container named exactly APP (as earlier deploykit versions ran it) is this app's too
        named = self.listed(name=[f"^/{self.params['app']}$"])
        names = sorted({n.lstrip("/") for c in labelled + named for n in c["Names"][:1]})
        found = []  # (created, Container)
        for info in filter(None, map(self.inspect, names)):  # one may be removed meanwhile: None, left out
            labels = info["Config"]["Labels"] or {}
            port = labels.get(LABEL_PORT) or (info["Config"].get("Env") and dict(
                e.split("=", 1) for e in info["Config"]["Env"] if "=" in e).get("DEPLOYKIT_PORT"))
            restart = ((info.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
            found.append((info["Created"], Container(
                info["Name"].lstrip("/"), info["State"]["Running"], labels.get(LABEL_SPEC), labels.get(LABEL_RELEASE),
                labels.get(LABEL_PROTOCOL), int(port) if port else None, restart, labels)))
        return [container for _, container in sorted(found, key=lambda pair: pair[0])]

    def apps(self) -> list[str]:
        """The apps whose containers run on the host (their label's values)."""
        return sorted({c["Labels"][LABEL_APP] for c in self.listed(stopped=False, label=[LABEL_APP])})

    def container_ids(self, names: list[str] | None = None) -> list[str]:
        """Full ids of this app's running containers, or of the containers `names`."""
        if names:
            return [info["Id"] for info in filter(None, map(self.inspect, names))]
        return [c["Id"] for c in self.listed(stopped=False, label=[f"{LABEL_APP}={self.params['app']}"])]

    def image_id(self) -> str:
        status, info = self.get(f"/images/{self.params['image']}/json")
        if status != 200:
            raise SwapError(f"image {self.params['image']} is not on this host: ship it first (app role, image tasks)")
        return str(info["Id"])

    def logs(self, name: str) -> str:
        _, out, err = self("logs", "--tail", "30", name, check=False)
        return (out + err).strip()[-3000:]

    def running(self, name: str) -> bool:
        return self.state(name)[0]

    def state(self, name: str) -> tuple[bool, str]:
        """(running, restart count) of a container; (False, "") when there is none of that name."""
        info = self.inspect(name)
        return (bool(info["State"]["Running"]), str(info["RestartCount"])) if info else (False, "")

    def set_restart(self, policy: str, *names: str) -> tuple[int, str, str]:
        """Give the containers `names` the restart policy `policy` (one call); its answer, unchecked."""
        return self("update", "--restart", policy, *names, check=False)

    def start(self, names: list[str]) -> None:
        """Start the (stopped) containers, one call each, unchecked."""
        for name in names:
            self("start", name, check=False)

    def force_remove(self, name: str) -> None:
        """Remove a container, running or not (its volumes stay), unchecked."""
        self("rm", "--force", name, check=False)

    def remove(self, names: list[str]) -> None:
        """Remove the (stopped) containers with their anonymous volumes, one call each, unchecked."""
        for name in names:
            self("rm", "--force", "--volumes", name, check=False)

    def prune_images(self, keep: set[str]) -> list[str]:
        """Remove the images of the app's repository (params["image"] without its tag) but `keep` and untagged
        ones; the images removed."""
        repository = self.params["image"].rsplit(":", 1)[0]
        status, found = self.get("/images/json", filters={"reference": [repository]})
        tags = sorted({t for image in (found if status == 200 else []) for t in image.get("RepoTags") or []
                       if t.startswith(repository + ":") and not t.endswith(":<none>")})
        return [image for image in tags if image not in keep and self("rmi", image, check=False)[0] == 0]
