#!/usr/bin/python
# Copyright: deploykit contributors; MIT License

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploykit_swap
short_description: Replace a host's app container with a new release, without failed requests
description:
  - Runs the new release's container beside the old one on the same port (host networking, SO_REUSEPORT),
    waits until the new container itself passes its health gate, then stops the old one with SIGTERM and a
    bounded drain. Connections still queued on the old listener move to the new one (this needs
    net.ipv4.tcp_migrate_req=1, which the base role sets).
  - While two containers share the port, a health answer may come from either; only answers naming the new
    container (its C(X-Deploykit-Instance) header, which deploykit's launcher adds to every answer) count as
    successes; any 2xx status is healthy.
  - The new container runs without a restart policy until it passed its gate (a crash shows at once), then
    gets O(restart_policy).
  - While the old container drains, the module holds a listener of its own in the port's SO_REUSEPORT group
    that accepts nothing (a drain guard), so the port never lacks a listener. If the new container dies during
    the drain, the old one is started again and the guard is closed once it listens; the connections the guard
    held move to it, none is refused.
  - When the new container fails its gate it is stopped gracefully too (its queue moves back to the old one)
    and removed; the old keeps serving and the module fails, naming the reason and the container's last logs.
  - With O(strategy=recreate) the old container is stopped first, then the new started (the downtime baseline).
  - With O(strategy=blue-green) the new container listens on the other of two O(ports) and passes its gate
    there; the old keeps running and is returned in RV(retire). The caller points nginx at RV(port), reloads
    it, then stops the old containers (the app role does).
  - The container's port is labelled C(io.deploykit.port); reuse-port swaps stay on the port the running
    container listens on, and RV(port) always says where the app listens now.
  - A host left with several app containers (an interrupted swap) converges; every app container but the
    healthy new one is stopped gracefully and removed.
  - Idempotent. When a running app container already has this exact image and settings, nothing changes.
version_added: "0.1.0"
author: deploykit
options:
  app:
    description: The app's name; its containers are labelled C(io.deploykit.app=APP) and named C(APP-RELEASE-HASH).
    type: str
    required: true
  image:
    description: Image of the new release (present on the host).
    type: str
    required: true
  release:
    description: The release (version) being deployed.
    type: str
    required: true
  strategy:
    description: How the new container replaces the old.
    type: str
    choices: [reuse-port, recreate, blue-green]
    default: reuse-port
  settle:
    description: >-
      The end of the health gate: for this many seconds after its `successes` healthy answers, while the old
      container still serves, the new one must keep running and answer every probe healthy. A release that
      crashes or fails soon after its first answers is caught while the old one still serves. The new
      container counts as healthy at the end of this window; the old one is stopped right after.
    type: float
    default: 2.0
  drain_guard:
    description: >-
      With reuse-port, hold a listener on the port while the old container drains (see the description), so that
      a new container dying meanwhile costs no request.
    type: bool
    default: true
  drain_guard_hold:
    description: >-
      Seconds the drain guard stays after the old container is gone, while the new one takes all the traffic;
      then the new one must still run and listen, or the old one is started again. Connections the guard
      takes wait at most the drain plus this.
    type: float
    default: 0.5
  ports:
    description: The two ports blue-green alternates between. Default the health port and the one after it.
    type: list
    elements: int
    default: []
  env:
    description: Environment variables of the container (not secrets).
    type: dict
    default: {}
  env_file:
    description: Host file of environment variables (secrets), mode 0600.
    type: path
  user:
    description: uid:gid the server runs as.
    type: str
  read_only:
    description: Read-only root filesystem.
    type: bool
    default: true
  tmpfs:
    description: tmpfs mounts (C(/tmp:size=64m)).
    type: list
    elements: str
    default: []
  volumes:
    description: Bind mounts (C(/var/lib/deploykit/data/app:/data)), e.g. the app's persistent directory.
    type: list
    elements: str
    default: []
  cap_drop:
    description: Capabilities to drop.
    type: list
    elements: str
    default: [ALL]
  security_opts:
    description: Security options.
    type: list
    elements: str
    default: ["no-new-privileges:true"]
  restart_policy:
    description: Docker restart policy.
    type: str
    default: unless-stopped
  labels:
    description: More labels.
    type: dict
    default: {}
  stop_timeout:
    description: Seconds C(docker stop) waits for a graceful stop before SIGKILL (the drain bound).
    type: int
    default: 40
  limits:
    description: >-
      Resource limits of the container, as C(docker run) takes them: C(memory) (e.g. C(1g)), C(cpus) (e.g.
      C(1.5)), C(pids) (the most processes and threads). An empty, zero or missing one is no limit.
    type: dict
    default: {}
  exit_grace:
    description: >-
      With reuse-port, seconds the old container may take to exit by itself once its drain is over, before it is
      killed. The drain is over when no process of the container holds a connection of the port any more: every
      request it accepted was answered. Its processes are then paused (SIGSTOP) and looked at again, so that none
      accepts one meanwhile; connections still queued on a listener it held move to the new container's when
      it is killed (tcp_migrate_req). Servers take longer to exit than to drain (a uWSGI master looks at its
      workers once a second; workers unload the app). The watch needs the old container's listener seen during
      the gate (same network namespace, root); without it the module waits for the exit, up to C(stop_timeout).
    type: float
    default: 0.1
  health:
    description: The health gate the new container must pass.
    type: dict
    required: true
    suboptions:
      protocol:
        description: What the server speaks.
        type: str
        choices: [http, uwsgi, fastcgi]
        default: http
      address:
        description: Address to probe.
        type: str
        default: 127.0.0.1
      port:
        description: The app's port.
        type: int
        required: true
      path:
        description: Health path.
        type: str
        default: /health
      host_header:
        description: Host header (one of Django's ALLOWED_HOSTS).
        type: str
        default: localhost
      successes:
        description: Healthy answers from the new container needed (errors reset the count).
        type: int
        default: 3
      timeout:
        description: Seconds the new container has to pass.
        type: float
        default: 60
      interval:
        description: Seconds between probes (of the gate and of the settle window).
        type: float
        default: 0.1
  keep_releases:
    description: Images of this many most recent releases are kept on the host (for rollback); older app images are
      removed.
    type: int
    default: 3
  state_file:
    description: >-
      Host file recording the releases deployed there (newest last), for an operator on the host; a rollback
      reads the controller's audit log instead.
    type: path
    default: /var/lib/deploykit/releases.json
  progress_file:
    description: >-
      Host file where a swap writes each step as it happens, one JSON line
      (C({"step": "old_signalled", "at": 3.412})), the C(started) line with the new container's name; written
      anew by each swap that changes something. C(tail -f) it on a host to follow a swap; tests use it to
      inject a fault at a given step. Default C(/run/deploykit/APP.progress).
    type: path
attributes:
  check_mode:
    support: full
    details: reports the containers it would start and stop.
  diff_mode:
    support: none
requirements:
  - docker CLI on the host (for changes), and its engine's API on its unix socket (for reads)
"""

EXAMPLES = r"""
- name: Swap the app container to the new release
  deploykit_swap:
    app: deploykit-app
    image: deploykit/flask-demo:1.4.2
    release: "1.4.2"
    env: {DEPLOYKIT_VARIANT: uwsgi, DEPLOYKIT_PORT: "8000"}
    env_file: /etc/deploykit/app.env
    user: "10001:10001"
    tmpfs: ["/tmp:size=64m"]
    stop_timeout: 40
    health: {protocol: uwsgi, port: 8000, host_header: demo.lab}
"""

RETURN = r"""
container:
  description: Name of the app container now serving.
  returned: always
  type: str
stopped:
  description: Names of the app containers stopped and removed.
  returned: always
  type: list
  elements: str
timings:
  description: >-
    Seconds from the module's start to each step: started; ready (the health gate's `successes` answers);
    healthy (the gate passed, settle window included); old_signalled (the old container's server got its
    stop signal); old_closed (its listener closed); old_drained (it holds no socket of the port: its last
    connection is closed); old_stopped (its main process exited, or was killed C(exit_grace) after its drain);
    old_removed; and old_restarted when the new container died during the drain. Each old_* step is the
    first old container's, when there are several.
  returned: changed
  type: dict
port:
  description: The port the app listens on now (nginx's upstream port).
  returned: always
  type: int
retire:
  description: With blue-green, the old containers still running, to stop once nginx points at RV(port).
  returned: always
  type: list
  elements: str
started_at:
  description: When the module started, in seconds since the epoch (the host's clock); timings count from it.
  returned: changed
  type: float
health_attempts:
  description: Probes sent by the health gate.
  returned: changed
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.deploykit_containers import SwapError
from ansible.module_utils.deploykit_probe import PROBE_OPTIONS
from ansible.module_utils.deploykit_strategies import STRATEGIES
from ansible.module_utils.deploykit_swapper import Swapper

HEALTH_SPEC = dict(
    PROBE_OPTIONS,
    successes=dict(type="int", default=3),
    timeout=dict(type="float", default=60.0),
    interval=dict(type="float", default=0.1),
)
ARGUMENT_SPEC = dict(
    app=dict(type="str", required=True),
    image=dict(type="str", required=True),
    release=dict(type="str", required=True),
    strategy=dict(type="str", choices=list(STRATEGIES), default="reuse-port"),
    ports=dict(type="list", elements="int", default=[]),
    settle=dict(type="float", default=2.0),
    drain_guard=dict(type="bool", default=True),
    drain_guard_hold=dict(type="float", default=0.5),
    env=dict(type="dict", default={}),
    env_file=dict(type="path"),
    user=dict(type="str"),
    read_only=dict(type="bool", default=True),
    tmpfs=dict(type="list", elements="str", default=[]),
    volumes=dict(type="list", elements="str", default=[]),
    cap_drop=dict(type="list", elements="str", default=["ALL"]),
    security_opts=dict(type="list", elements="str", default=["no-new-privileges:true"]),
    restart_policy=dict(type="str", default="unless-stopped"),
    labels=dict(type="dict", default={}),
    stop_timeout=dict(type="int", default=40),
    limits=dict(type="dict", default={}),
    exit_grace=dict(type="float", default=0.1),
    health=dict(type="dict", required=True, options=HEALTH_SPEC),
    keep_releases=dict(type="int", default=3),
    state_file=dict(type="path", default="/var/lib/deploykit/releases.json"),
    progress_file=dict(type="path"),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if module.params["stop_timeout"] < 1 or module.params["keep_releases"] < 1:
        module.fail_json(msg="stop_timeout and keep_releases must be at least 1")
    swapper = Swapper(module)
    try:
        result = swapper.run()
    except SwapError as exc:
        module.fail_json(msg=str(exc), timings=swapper.timings, **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
