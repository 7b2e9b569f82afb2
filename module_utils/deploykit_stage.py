"""What a host needs before a release's container can run, for library/deploykit_stage.py, in one call: whether
the release's image is there (and is the build the controller made), the secrets file the container reads, and
the app's persistent directory. No Ansible in here: tests/test_swap_module.py uses it as is."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from typing import Any

from ansible.module_utils.deploykit_host import engine_get, replace_file

INSPECT_BOUND = 60  # seconds the engine may take to say what it knows of an image


def image_state(image: str, expected_id: str = "") -> dict[str, Any]:
    """The host's image `image`: its id (None: not on the host) and whether it must be shipped (absent, or
    another build than `expected_id`, when that is given). Raises EngineError when the engine cannot be asked."""
    status, info = engine_get(f"/images/{image}/json", INSPECT_BOUND)
    found = str(info["Id"]) if status == 200 and isinstance(info, dict) and info.get("Id") else None
    return {"id": found, "present": found is not None,
            "missing": found is None or bool(expected_id and found != expected_id)}


def owner_ids(owner: str) -> tuple[int, int]:
    """`user[:group]`, by name or number, as docker's --user takes it: (uid, gid). The group defaults to the user's
    own group when the user is a name, and to the same number when it is a number."""
    user, _, group = owner.partition(":")
    if user.isdigit():
        uid, default_gid = int(user), int(user)
    else:
        entry = pwd.getpwnam(user)
        uid, default_gid = entry.pw_uid, entry.pw_gid
    if not group:
        return uid, default_gid
    return uid, int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def ensure_directory(path: str, uid: int, gid: int, mode: int, check: bool) -> bool:
    """The folder `path` exists with that owner and mode (folders above it are made as root's, 0755); whether
    anything was (or, in check mode, would be) changed."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if not check:
            os.makedirs(path, mode=0o755, exist_ok=True)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        return True
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{path} exists and is not a folder")
    if (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (uid, gid, mode):
        return False
    if not check:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    return True


def write_private_file(path: str, content: str, check: bool) -> bool:
    """`content` in `path`, root's, mode 0600, in a folder of root's with mode 0700; written aside and renamed in
    (replace_file). Whether anything was (or would be) changed."""
    changed = ensure_directory(os.path.dirname(path) or ".", 0, 0, 0o700, check)
    return replace_file(path, content, 0o600, check) or changed
