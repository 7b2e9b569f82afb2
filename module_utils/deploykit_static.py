"""A release's static files on its host, for library/deploykit_stage.py: an app built from its deploykit.yml says
where they are in its image (/opt/deploykit/static.json, written by the build). They are copied to
DIR/releases/RELEASE-IMAGEID (by image id: two images of one release, another app's or a rebuild, are not the
same files), DIR/current points at them and DIR/previous at the ones before: nginx tries current, then previous,
so that a page the old container rendered during the swap still finds its files. The files of URL /static/ are
in DIR/releases/RELEASE-IMAGEID/static/ (nginx's root is DIR/current). No Ansible in here."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

from ansible.module_utils.deploykit_host import RunCommand as Run
from ansible.module_utils.deploykit_host import docker as docker_within

COPY_BOUND = 120  # seconds a `docker create` or `docker cp` may take
INFO = "/opt/deploykit/static.json"


def docker(run: Run, *args: str) -> tuple[int, str, str]:
    result: tuple[int, str, str] = docker_within(run, *args, bound=COPY_BOUND)
    return result


def point(root: str, name: str, target: str) -> None:
    """ROOT/NAME -> TARGET, replaced at once (a symlink made aside and renamed over the old one)."""
    aside = os.path.join(root, f".{name}")
    if os.path.lexists(aside):
        os.unlink(aside)
    os.symlink(target, aside)
    os.replace(aside, os.path.join(root, name))


def write_url(folder: str, url: str) -> None:
    with open(os.path.join(folder, ".url"), "w", encoding="utf-8") as stream:
        stream.write(url + "\n")


def readable(top: str) -> None:
    """chmod -R a+rX: everyone may read the files and go through the folders (nginx's user)."""
    def refuse(error: OSError) -> None:
        raise error

    for place, _folders, files in os.walk(top, onerror=refuse):
        for entry in [place] + [os.path.join(place, name) for name in files]:
            mode = os.lstat(entry).st_mode
            if not os.path.islink(entry):
                os.chmod(entry, mode | 0o444 | (0o111 if mode & 0o111 or entry == place else 0))


def remove(path: str) -> None:
    """rm -rf PATH (a folder, a file or a link)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def link(root: str, name: str) -> str | None:
    try:
        return os.readlink(os.path.join(root, name))
    except OSError:
        return None


class StaticFiles:
    """The static files of image `image_id` (its full id, `sha256:...`) of release `release`, under `root`."""

    def __init__(self, run: Run, root: str, release: str, image: str, image_id: str) -> None:
        self.run, self.root, self.image = run, root, image
        self.name = f"{release}-{image_id.removeprefix('sha256:')[:12]}"
        self.releases = os.path.join(root, "releases")
        self.folder = os.path.join(self.releases, self.name)
        self.container: str | None = None

    def stage(self, keep: int, check: bool) -> tuple[str, bool]:
        """Copy them (unless an earlier deploy of this build did), point `current` at them and keep the `keep`
        newest releases: (their URL, "" when the image has none; whether anything was or would be changed). In
        check mode the image is still read (a container created and removed), so that the URL is known."""
        try:
            url, changed = self._url_copied(), False
            if url is None:
                url, folder = self._read_info()
                if not url:
                    return "", False
                changed = True
                if not check:
                    self._copy(folder, url)
            if link(self.root, "current") != f"releases/{self.name}":
                changed = True
                if not check:
                    self._point_current()
            if not check:
                self._prune(keep)
            return url, changed
        finally:
            if self.container:
                # a timeout here must not hide the result (or the error) above; the label finds the container later
                with contextlib.suppress(TimeoutError):
                    docker(self.run, "rm", "-f", self.container)

    def _url_copied(self) -> str | None:
        """The URL an earlier deploy of this build wrote beside its copy; None when there is no copy."""
        try:
            with open(os.path.join(self.folder, ".url"), encoding="utf-8") as stream:
                return stream.read().strip()
        except FileNotFoundError:
            return None

    def _read_info(self) -> tuple[str, str]:
        """(URL, folder in the image) from the image's static.json; ("", "") when it has none (no file, an
        empty one, or one without both)."""
        rc, out, err = docker(self.run, "create", "--network", "none", "--label", "io.deploykit.static-copy=true",
                              self.image, "true")
        if rc != 0:
            raise OSError(f"docker create {self.image} failed: {err.strip() or out.strip()}")
        self.container = out.strip()
        with tempfile.TemporaryDirectory() as scratch:
            rc, _, _ = docker(self.run, "cp", "--follow-link", f"{self.container}:{INFO}", scratch)
            if rc != 0:  # no static.json: an image without static files
                return "", ""
            with open(os.path.join(scratch, os.path.basename(INFO)), encoding="utf-8") as stream:
                text = stream.read()
        try:
            info = json.loads(text or "{}")
        except ValueError as exc:
            raise ValueError(f"{INFO} in {self.image} is not JSON: {exc}") from None
        if not isinstance(info, dict):
            raise ValueError(f"{INFO} in {self.image} is not a JSON object: {text[:200]!r}")
        url, folder = str(info.get("url") or ""), str(info.get("root") or "")
        return (url, folder) if url and folder else ("", "")

    def _copy(self, folder: str, url: str) -> None:
        """The image's `folder` to releases/NAME/URL, made aside and renamed in, readable by nginx. A folder of
        this build without its .url (copied by a deploykit before it wrote one) keeps its files and gets one."""
        if os.path.isdir(self.folder):
            write_url(self.folder, url)
            return
        os.makedirs(self.releases, mode=0o755, exist_ok=True)
        partial = os.path.join(self.releases, f".{self.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            target = os.path.join(partial, url.strip("/"))
            os.makedirs(target, mode=0o755)
            rc, out, err = docker(self.run, "cp", f"{self.container}:{folder.rstrip('/')}/.", target)
            if rc != 0:
                raise OSError(f"could not copy the static files {folder} out of {self.image}: "
                              f"{err.strip() or out.strip()}")
            write_url(partial, url)
            readable(partial)
            os.replace(partial, self.folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _point_current(self) -> None:
        current = link(self.root, "current")
        if current:
            point(self.root, "previous", current)
        point(self.root, "current", f"releases/{self.name}")

    def _prune(self, keep: int) -> None:
        """Keep the `keep` newest releases, and whatever current and previous point at."""
        kept = {link(self.root, "current"), link(self.root, "previous")}
        names = [name for name in os.listdir(self.releases) if not name.startswith(".")]
        names.sort(key=lambda name: (os.lstat(os.path.join(self.releases, name)).st_mtime, name), reverse=True)
        for name in names[keep:]:
            if f"releases/{name}" not in kept:
                remove(os.path.join(self.releases, name))
