#!/usr/bin/python
# Copyright: deploykit contributors; MIT License

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploykit_lock
short_description: Take, renew, read or release the fleet's deploy lock, kept on a host of the fleet
description:
  - The lock is a file on the host (O(path)) saying who holds it (O(holder)), since when, and until when its
    lease runs. It lives with the fleet, so deploys from different machines (a CI runner and a laptop) exclude
    each other; deploykit keeps it on the first host of the group web.
  - O(state=present) takes the lock, or renews it when O(token) holds it already (every playbook of one deploy
    passes the same token). It fails, naming the holder, when another deploy holds it and its lease has not
    expired. An expired lock is taken over, and so is the lock of O(stale_token) (the controller that took it
    knows its process is gone); the result says so.
  - O(state=absent) releases the lock held with O(token) (another deploy's lock is left as it is); with O(force)
    whoever holds it.
  - O(state=query) reads it. Changes are atomic (an flock, a file written aside and renamed in).
  - In check mode nothing is changed; O(state=present) and O(state=absent) say what they would do.
version_added: "0.1.0"
author: deploykit
options:
  path:
    description: The lock file on the host.
    type: path
    default: /var/lib/deploykit/lock/fleet.lock
  state:
    description: Take or renew (present), release (absent), or read (query) the lock.
    type: str
    choices: [present, absent, query]
    default: present
  token:
    description: The deploy's own token (one per deploy, the same for all of its playbooks).
    type: str
  holder:
    description: Who takes the lock, e.g. user, controller, pid and command; shown to whoever finds it held.
    type: dict
    default: {}
  lease:
    description: Seconds the lock is held without a renewal; a holder that died frees it after this.
    type: int
    default: 900
  stale_token:
    description: A token whose holder is known to be gone; its lock is taken over at once.
    type: str
    default: ""
  force:
    description: With O(state=absent), release the lock whoever holds it.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Take the fleet's deploy lock
  deploykit_lock:
    token: "{{ deploy_token }}"
    holder:
      user: "{{ lookup('ansible.builtin.env', 'USER') }}"
      command: deploy 1.2.0
  run_once: true
  delegate_to: "{{ groups['web'][0] }}"

- name: Release it
  deploykit_lock:
    state: absent
    token: "{{ deploy_token }}"
  run_once: true
  delegate_to: "{{ groups['web'][0] }}"
"""

RETURN = r"""
lock:
  description: >-
    The lock after the call (token, holder, since and expires, in seconds since the epoch), or the lock
    released (state absent); empty when there is none.
  type: dict
  returned: always
held:
  description: Whether a lock is held after the call.
  type: bool
  returned: always
action:
  description: What happened, e.g. taken, renewed, taken over from an expired lock, released, none.
  type: str
  returned: always
now:
  description: The host's clock (seconds since the epoch), which judges the lease.
  type: float
  returned: always
"""

import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.deploykit_lock import LockHeld, describe, read, release, take  # noqa: E402

ARGUMENT_SPEC = dict(
    path=dict(type="path", default="/var/lib/deploykit/lock/fleet.lock"),
    state=dict(type="str", choices=["present", "absent", "query"], default="present"),
    token=dict(type="str", no_log=False),
    holder=dict(type="dict", default={}),
    lease=dict(type="int", default=900),
    stale_token=dict(type="str", default="", no_log=False),
    force=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_if=[("state", "present", ["token"])])
    p = module.params
    now = time.time()
    if p["lease"] < 1:
        module.fail_json(msg=f"lease must be at least 1 second, not {p['lease']}")
    current = read(p["path"])
    if p["state"] == "query" or module.check_mode:
        module.exit_json(changed=False, lock=current or {}, held=current is not None, action="none", now=now)
    try:
        if p["state"] == "present":
            lock, action = take(p["path"], p["token"], p["holder"], p["lease"], p["stale_token"], now)
            module.exit_json(changed=action != "renewed", lock=lock, held=True, action=action, now=now)
        if not p["token"] and not p["force"]:
            module.fail_json(msg="releasing the lock needs its token, or force")
        released = release(p["path"], p["token"] or "", p["force"])
        module.exit_json(changed=released is not None, lock=released or {}, held=False,
                         action="released" if released else "none", now=now)
    except LockHeld as exc:
        module.fail_json(msg=f"another deploy holds the fleet's lock: {describe(exc.lock, now)}", lock=exc.lock,
                         held=True, action="refused", now=now)


if __name__ == "__main__":
    main()
