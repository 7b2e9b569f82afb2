"""An app's nginx file, for library/deploykit_nginx_app.py, in one call on the host: written only when its text
(or owner, or mode) differs, checked with the whole configuration when its text changed (an include cannot be
checked alone: `nginx -t`), put back as it was when nginx refuses it, and, when asked, nginx reloaded with it. No
Ansible in here: tests/test_nginx_app.py uses it as is."""

from __future__ import annotations

import os
from typing import Any

from ansible.module_utils.deploykit_host import RunCommand as Run
from ansible.module_utils.deploykit_host import read_text, replace_file


class NginxRefused(Exception):
    """nginx refused the configuration with the app's new file; the previous file is back."""


def place_app_file(run: Run, path: str, content: str, mode: int, check_command: list[str],
                   check: bool, reload_command: list[str] | None = None) -> dict[str, Any]:
    """Put `content` in the app's file `path` (root's, `mode`); when its text changed, run `check_command` (nginx
    -t), then `reload_command` if given (service nginx reload). If either fails, put the previous text back with
    its mode (or remove the file, if there was none: a run again finds the text changed, and checks and reloads
    again) and raise NginxRefused with nginx's words. {changed, checked, reloaded, before (None: no file),
    after}; in check mode nothing is written, checked or reloaded."""
    before = read_text(path)
    before_mode = os.stat(path).st_mode & 0o7777 if before is not None else mode
    changed = replace_file(path, content, mode, check)
    checked = changed and before != content and not check
    reloaded = False
    if checked:
        for command, refused in ((check_command, "refused the configuration with"),
                                 (reload_command, "did not reload with")):
            if not command:
                continue
            rc, out, err = run(command)
            if rc != 0:
                if before is None:
                    os.unlink(path)
                else:
                    replace_file(path, before, before_mode, False)
                reason = (err.strip() or out.strip() or f"{command[0]} exited with {rc}")[-2000:]
                raise NginxRefused(f"nginx {refused} the new {os.path.basename(path)} (the previous file is back"
                                   f"{'' if before is not None else ': there was none'}): {reason}")
        reloaded = bool(reload_command)
    return {"changed": changed, "checked": checked, "reloaded": reloaded, "before": before, "after": content}
