#!/usr/bin/python
# Copyright: deploykit contributors; MIT License

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploykit_nginx_app
short_description: Write an app's nginx file, checked with the whole configuration, in one call
description:
  - Writes O(content) to O(path) (root's, mode O(mode)) when the file's text, owner or mode differs; it is
    written aside and renamed in, so that nginx never reads half of it.
  - When the text changed, runs O(check_command) (C(nginx -t -q); an included file cannot be checked alone, the
    whole configuration is). When nginx refuses it, the previous file is put back (or the new one removed, when
    there was none) and the module fails with nginx's words; nothing is left behind (no backup files).
  - Reloads nginx with O(reload_command) when it is given and the text changed (and was checked); when that
    fails, the previous file is put back as well. Without it, notify a handler on RV(changed) (the nginx role's
    C(Reload nginx)).
  - One module call instead of a template task (its C(stat) and C(file) modules on the host), a command and a
    block's rescue (a deploy's time on each host is mostly its tasks' own overhead).
  - In check mode nothing is written or checked; with C(--diff) the change is shown.
version_added: "0.1.0"
author: deploykit
options:
  path:
    description: The app's file, in the folder nginx includes (C(/etc/nginx/deploykit.d/APP.conf)).
    type: path
    required: true
  content:
    description: The file's text, e.g. rendered by the C(ansible.builtin.template) lookup.
    type: str
    required: true
  mode:
    description: The file's mode, in octal.
    type: str
    default: "0644"
  check_command:
    description: The command that checks nginx's whole configuration with the new file; it must exit 0.
    type: list
    elements: str
    default: [nginx, -t, -q]
  reload_command:
    description:
      - The command that reloads nginx once the changed file was checked, e.g. C([service, nginx, reload]) (on a
        host with systemd, C(service) asks it). Empty, the module does not reload nginx.
      - A deploy's nginx role passes it (one task on the host instead of two); a provision, which may change more
        than this file, leaves the reload to its handler.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Write the app's upstream and server blocks, checked with the whole configuration
  deploykit_nginx_app:
    path: /etc/nginx/deploykit.d/deploykit-app.conf
    content: "{{ lookup('ansible.builtin.template', 'app.conf.j2') }}"
  notify: Reload nginx

- name: Write the app's file, checked with the whole configuration, and reload nginx with it
  deploykit_nginx_app:
    path: /etc/nginx/deploykit.d/deploykit-app.conf
    content: "{{ lookup('ansible.builtin.template', 'app.conf.j2') }}"
    reload_command: [service, nginx, reload]
"""

RETURN = r"""
checked:
  description: Whether O(check_command) ran (the text changed) and accepted the configuration.
  type: bool
  returned: success
reloaded:
  description: Whether O(reload_command) ran and reloaded nginx (the text changed and was accepted).
  type: bool
  returned: success
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.deploykit_nginx import NginxRefused, place_app_file  # noqa: E402

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    content=dict(type="str", required=True),
    mode=dict(type="str", default="0644"),
    check_command=dict(type="list", elements="str", default=["nginx", "-t", "-q"]),
    reload_command=dict(type="list", elements="str", default=[]),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    try:
        mode = int(p["mode"], 8)
    except ValueError:
        module.fail_json(msg=f"mode must be an octal mode such as 0644, not {p['mode']!r}")
    if not p["check_command"]:
        module.fail_json(msg="check_command must name a command (nginx -t -q)")
    if not os.path.isdir(os.path.dirname(p["path"])):
        module.fail_json(msg=f"{os.path.dirname(p['path'])} is not a folder on this host: is nginx provisioned "
                             "(playbooks/site.yml, the nginx role with nginx_install)?")
    try:
        placed = place_app_file(module.run_command, p["path"], p["content"], mode, p["check_command"],
                                module.check_mode, p["reload_command"])
    except NginxRefused as exc:
        module.fail_json(msg=str(exc), changed=False)
    except OSError as exc:
        module.fail_json(msg=f"could not write {p['path']}: {exc}")
    result = dict(changed=placed["changed"], checked=placed["checked"], reloaded=placed["reloaded"])
    if module._diff and placed["changed"]:
        result["diff"] = dict(before=placed["before"] or "", after=placed["after"],
                              before_header=p["path"] if placed["before"] is not None else "(absent)",
                              after_header=p["path"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
