#!/usr/bin/python
# Copyright: deploykit contributors; MIT License

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploykit_stage
short_description: Ready a host for a release in one call (its image, secrets file, data folder, static files)
description:
  - Says whether the host has the release's image O(image), and whether it is the build O(image_id) made on the
    controller; when it is not (RV(image_missing)), the image must be shipped before the swap.
  - Writes O(env_content) to O(env_file), the secrets file the container reads (root's, mode 0600, in a folder
    of root's with mode 0700). It is written aside and renamed in.
  - Creates the app's persistent folder O(data_dir) with the owner the container runs as, when one is given.
  - When O(static_dir) is given and the host has the image (RV(image_missing) false), copies the release's static
    files out of it to O(static_dir)C(/releases/)O(release)C(-IMAGEID/URL) (unless an earlier deploy of this
    build did), points O(static_dir)C(/current) at them and C(previous) at the ones before, and keeps
    O(keep_releases) releases. The image says where its files are and their URL (C(/opt/deploykit/static.json),
    written by deploykit's build); an image without that file, or with one that names no C(url) and C(root),
    has none (RV(static_url) empty). Each C(docker) command it runs may take 120 s.
  - When the image must be shipped first, no static file is copied (RV(static_staged) false); call the module
    again after shipping, with O(image), O(image_id), O(static_dir), O(release) and O(require_image).
  - One module call instead of several tasks: a deploy's time on each host is mostly the tasks' own overhead.
  - In check mode nothing is changed; the result says what would be (the image is still read, through a
    container created and removed, so that RV(static_url) is known).
version_added: "0.1.0"
author: deploykit
options:
  image:
    description: The release's image, C(repository:tag).
    type: str
    required: true
  image_id:
    description: The image id of the release built on the controller; another id on the host means it must be
      shipped again. Empty to take any image of that name.
    type: str
    default: ""
  env_file:
    description: The secrets file the container reads (C(docker run --env-file)); empty to leave it be.
    type: path
    default: ""
  env_content:
    description: Its content, C(NAME=value) lines.
    type: str
    default: ""
  data_dir:
    description: The app's persistent folder on the host; empty for none.
    type: path
    default: ""
  data_owner:
    description: Its owner, C(user[:group]) by name or number (the container's user).
    type: str
    default: "root"
  data_mode:
    description: Its mode, in octal.
    type: str
    default: "0750"
  static_dir:
    description: Where the release's static files go on the host (nginx serves them); empty for none.
    type: path
    default: ""
  release:
    description: The release, named in the static files' folder. Required with O(static_dir).
    type: str
    default: ""
  keep_releases:
    description: How many releases' static files to keep (and whatever C(current) and C(previous) point at).
    type: int
    default: 3
  require_image:
    description: Fail when the host lacks the image (or has another build than O(image_id)), rather than say
      so in RV(image_missing); for the call after shipping. Not in check mode, where nothing was shipped.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Ready the host for the release
  deploykit_stage:
    image: deploykit/flask-demo:1.2.0
    image_id: "{{ built_image_id }}"
    env_file: /etc/deploykit/app.env
    env_content: "{{ lookup('ansible.builtin.template', 'app.env.j2') }}"
    data_dir: /var/lib/deploykit/data/deploykit-app
    data_owner: "10001:10001"
    static_dir: /var/lib/deploykit/static/deploykit-app
    release: 1.2.0
  register: staged

- name: Say whether the image must be shipped
  ansible.builtin.debug:
    msg: "{{ staged.image_missing }}"
"""

RETURN = r"""
image_present:
  description: Whether an image of that name is on the host.
  type: bool
  returned: always
image_found_id:
  description: Its id (empty when there is none).
  type: str
  returned: always
image_missing:
  description: Whether the image must be shipped (absent, or another build than O(image_id)).
  type: bool
  returned: always
static_staged:
  description: Whether the static files were seen to (O(static_dir) given and the image on the host).
  type: bool
  returned: always
static_url:
  description: The URL the static files are served under (from the image), empty when it has none.
  type: str
  returned: always
changes:
  description: What was (or, in check mode, would be) changed, of C(env_file), C(data_dir) and C(static_files).
  type: list
  elements: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.deploykit_stage import (  # noqa: E402
    ensure_directory,
    image_state,
    owner_ids,
    write_private_file,
)
from ansible.module_utils.deploykit_static import StaticFiles  # noqa: E402

ARGUMENT_SPEC = dict(
    image=dict(type="str", required=True),
    image_id=dict(type="str", default=""),
    env_file=dict(type="path", default=""),
    env_content=dict(type="str", default="", no_log=True),
    data_dir=dict(type="path", default=""),
    data_owner=dict(type="str", default="root"),
    data_mode=dict(type="str", default="0750"),
    static_dir=dict(type="path", default=""),
    release=dict(type="str", default=""),
    keep_releases=dict(type="int", default=3),
    require_image=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    if p["static_dir"] and not p["release"]:
        module.fail_json(msg="static_dir needs the release it is for (release)")
    if p["static_dir"] and p["keep_releases"] < 1:
        module.fail_json(msg=f"keep_releases must be 1 or more, not {p['keep_releases']}")
    try:
        mode = int(p["data_mode"], 8)
    except ValueError:
        module.fail_json(msg=f"data_mode must be an octal mode such as 0750, not {p['data_mode']!r}")
    try:
        uid, gid = owner_ids(p["data_owner"]) if p["data_dir"] else (0, 0)
    except KeyError:
        module.fail_json(msg=f"data_owner {p['data_owner']!r} is not a user[:group] this host knows (names or numbers)")
    changes: list[str] = []
    static_url, static_staged = "", False
    try:
        image = image_state(p["image"], p["image_id"])
        if p["require_image"] and image["missing"] and not module.check_mode:
            module.fail_json(msg=(f"the image {p['image']} is not on this host" if not image["present"] else
                                  f"{p['image']} on this host is image {image['id']}, not {p['image_id']}")
                             + ": ship it first (the app role's image tasks)")
        if p["env_file"] and write_private_file(p["env_file"], p["env_content"], module.check_mode):
            changes.append("env_file")
        if p["data_dir"] and ensure_directory(p["data_dir"], uid, gid, mode, module.check_mode):
            changes.append("data_dir")
        if p["static_dir"] and not image["missing"]:
            static = StaticFiles(module.run_command, p["static_dir"], p["release"], p["image"], image["id"])
            static_url, changed = static.stage(p["keep_releases"], module.check_mode)
            static_staged = True
            if changed:
                changes.append("static_files")
    except (OSError, TimeoutError, ValueError) as exc:
        module.fail_json(msg=f"could not ready the host for the release: {exc}", changes=changes)
    module.exit_json(changed=bool(changes), changes=changes, image_present=image["present"],
                     image_found_id=image["id"] or "", image_missing=image["missing"],
                     static_staged=static_staged, static_url=static_url)


if __name__ == "__main__":
    main()
