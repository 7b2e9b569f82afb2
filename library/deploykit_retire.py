#!/usr/bin/python
# Copyright: deploykit contributors; MIT License

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploykit_retire
short_description: Retire a blue-green deploy's previous containers, once nginx sends requests to the new one
description:
  - "Waits until the host's nginx has no worker of a previous configuration left (a process named C(nginx: worker
    process is shutting down)): such a worker may still send requests to the old port. It looks every 0.2 s, at
    most O(nginx_wait) seconds, and then goes on (the workers finish on their own)."
  - Then stops each container of O(containers) gracefully (C(docker stop --time) O(stop_timeout)) and removes it
    with its anonymous volumes. A container that is not there is left out, so that a run again succeeds.
  - One module call instead of three tasks (a wait, a stop, a removal), the second half of the strategy
    blue-green of C(deploykit_swap), whose RV(retire) names the containers; the app role's C(retire.yml) calls it
    after nginx was pointed at the new container.
  - In check mode nothing is waited for or changed; the result says which containers would be retired.
version_added: "0.1.0"
author: deploykit
options:
  containers:
    description: The names of the previous containers (C(deploykit_swap)'s RV(retire)).
    type: list
    elements: str
    required: true
  stop_timeout:
    description: Seconds each container has to finish its requests after SIGTERM, before it is killed.
    type: int
    default: 30
  nginx_wait:
    description: Seconds to wait at most for nginx's workers of a previous configuration to be gone.
    type: float
    default: 20
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Retire the previous containers, now that nginx points at the new one
  deploykit_retire:
    containers: "{{ app_swap.retire }}"
    stop_timeout: 30
"""

RETURN = r"""
retired:
  description: The containers stopped and removed (in check mode, those that would be).
  type: list
  elements: str
  returned: success
waited:
  description: Seconds waited for nginx's workers of a previous configuration.
  type: float
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.deploykit_containers import Docker, SwapError  # noqa: E402
from ansible.module_utils.deploykit_retire import retire  # noqa: E402

ARGUMENT_SPEC = dict(
    containers=dict(type="list", elements="str", required=True),
    stop_timeout=dict(type="int", default=30),
    nginx_wait=dict(type="float", default=20),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    if p["stop_timeout"] < 0 or p["nginx_wait"] < 0:
        module.fail_json(msg=f"stop_timeout ({p['stop_timeout']}) and nginx_wait ({p['nginx_wait']}) must not be "
                             "negative")
    try:
        result = retire(Docker(module, p), module.run_command, p["containers"], p["stop_timeout"], p["nginx_wait"],
                        module.check_mode)
    except SwapError as exc:
        module.fail_json(msg=f"retiring the previous containers failed: {exc}", **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
