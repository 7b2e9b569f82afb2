#!/usr/bin/python
# Copyright: deploykit contributors; MIT License

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploykit_app_info
short_description: Read what of an app runs on the host, as deploykit_swap left it
description:
  - Lists the app's containers, oldest first, with what deploykit_swap and the app role labelled them with
    (release, server variant, the protocol nginx speaks to it, its port, its static files' URL), and which one
    serves (the newest that runs).
  - It finds them as deploykit_swap does (the same lookup, module_utils/deploykit_containers.py), so the label
    names stay in one place. Provisioning uses it to keep nginx pointing where the deployed app listens.
  - Without O(app), every app the host runs (RV(apps)): a host may run several, each in its own slot.
  - Read-only, so it also reads in check mode.
version_added: "0.1.0"
author: deploykit
options:
  app:
    description:
      - The app's container name (deploykit_swap's O(app); the app role's C(app_container_name)).
      - Omitted, every app of the host is read (RV(apps)).
    type: str
"""

EXAMPLES = r"""
- name: Read how the deployed app container listens
  deploykit_app_info:
    app: deploykit-app
  register: deployed

- name: Read every app the host runs
  deploykit_app_info:
  register: deployed_apps

- name: Say where nginx must send the app's requests
  ansible.builtin.debug:
    msg: "{{ deployed.serving.protocol }} on port {{ deployed.serving.port }}"
  when: deployed.serving
"""

RETURN = r"""
apps:
  description:
    - Without O(app), each app that has a running container on the host, as its RV(serving) with C(app) (its
      name), the one slot's (C(deploykit-app)) first, then by name.
  type: list
  elements: dict
  returned: when O(app) is omitted
containers:
  description: The app's containers, oldest first.
  type: list
  elements: dict
  returned: always
  contains:
    name:
      description: The container's name.
      type: str
    running:
      description: Whether it runs.
      type: bool
    release:
      description: The release it runs (its image tag).
      type: str
    variant:
      description: The server variant (empty when not labelled).
      type: str
    protocol:
      description: What nginx speaks to it (http, uwsgi or fastcgi).
      type: str
    port:
      description: The port it listens on.
      type: int
    static_url:
      description: The URL path of the app's static files, as nginx serves them (empty when none).
      type: str
    server_names:
      description: The app's host names, as nginx answers them (empty for a container of an older deploykit).
      type: list
      elements: str
    health_path:
      description: The app's health path (empty for a container of an older deploykit).
      type: str
    tls:
      description:
        - Where nginx reads the app's TLS files, C(certificate) and C(key) (paths on the host), and
          C(hsts_max_age); empty when the app is served over plain HTTP.
      type: dict
    restart_policy:
      description: Its restart policy (C(no) while a swap has not yet passed its gate).
      type: str
serving:
  description: The newest running container (one item of RV(containers)), or an empty dict when none runs.
  type: dict
  returned: always
"""

import json  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.deploykit_containers import (  # noqa: E402
    LABEL_HEALTH_PATH,
    LABEL_SERVER_NAMES,
    LABEL_STATIC,
    LABEL_TLS,
    LABEL_VARIANT,
    Docker,
    SwapError,
)

ARGUMENT_SPEC = dict(app=dict(type="str"))
LEGACY_SLOT = "deploykit-app"  # the one app slot of a host (deploykit.yml server.port 0)


def tls_of(labels: dict[str, str]) -> dict[str, object]:
    """Where nginx reads the app's TLS certificate and key, as its deploy labelled them ({}: plain HTTP)."""
    try:
        value = json.loads(labels.get(LABEL_TLS, "") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def describe(module: AnsibleModule, app: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    """(the app's containers, the one that serves or {})."""
    # stop_timeout: Docker's bound for a `docker stop`, which this module never runs
    found = Docker(module, dict(module.params, app=app, stop_timeout=0)).app_containers()
    containers = [dict(name=c.name, running=c.running, release=c.release or "",
                       variant=c.labels.get(LABEL_VARIANT, ""), protocol=c.protocol or "", port=c.port,
                       static_url=c.labels.get(LABEL_STATIC, ""), restart_policy=c.restart,
                       server_names=[n for n in c.labels.get(LABEL_SERVER_NAMES, "").split(",") if n],
                       health_path=c.labels.get(LABEL_HEALTH_PATH, ""), tls=tls_of(c.labels))
                  for c in found]
    running = [c for c in containers if c["running"]]
    return containers, (running[-1] if running else {})


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        if module.params["app"]:
            containers, serving = describe(module, module.params["app"])
            module.exit_json(changed=False, containers=containers, serving=serving)
        names = set(Docker(module, dict(module.params, app="", stop_timeout=0)).apps()) | {LEGACY_SLOT}
        apps = []
        for name in sorted(names, key=lambda n: (n != LEGACY_SLOT, n)):
            _, serving = describe(module, name)
            if serving:
                apps.append(dict(serving, app=name))
    except SwapError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, apps=apps)


if __name__ == "__main__":
    main()
