"""An app's nginx file, for library/deploykit_nginx_app.py, in one call on the host: written only when its text
(or owner, or mode) differs, checked with the whole configuration when its text changed (an include cannot be
checked alone: `nginx -t`), and put back as it was when nginx refuses it. No Ansible in here: tests/test_nginx_app.py
uses it as is."""

from __future__ import annotations

import os
from typing import Any

from ansible.module_utils.deploykit_host import RunCommand as Run
from ansible.module_utils.deploykit_host import read_text, replace_file


class NginxRefused(Exception):
    """nginx refused the configuration with the app's new file; the previous file is back."""


def place_app_file(run: Run, path: str, content: str, mode: int, check_command: list[str],
                   check: bool) -> dict[str, Any]:
    """Put `content` in the app's file `path` (root's, `mode`); when its text changed, run `check_command` (nginx
    -t) and, if it fails, put the previous text back with its mode (or remove the file, if there was none) and
    raise NginxRefused with nginx's words. {changed, checked, before (None: no file), after}; in check mode
    nothing is written or checked."""
    before = read_text(path)
    before_mode = os.stat(path).st_mode & 0o7777 if before is not None else mode
    changed = replace_file(path, content, mode, check)
    checked = changed and before != content and not check
    if checked:
        rc, out, err = run(check_command)
        if rc != 0:
            if before is None:
                os.unlink(path)
            else:
                replace_file(path, before, before_mode, False)
            reason = (err.strip() or out.strip() or f"{check_command[0]} exited with {rc}")[-2000:]
            raise NginxRefused(f"nginx refused the configuration with the new {os.path.basename(path)} (the "
                               f"previous file is back{'' if before is not None else ': there was none'}): {reason}")
    return {"changed": changed, "checked": checked, "before": before, "after": content}
