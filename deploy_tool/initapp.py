"""`deploy init`: write deploykit.yml for the app in a directory, from what deploy_tool.detect finds there.

No questions asked: flags override what is detected. Run again, it never overwrites the user's edits
silently: a file equal to what it would write is left as it is, another is replaced only with --force (the
old one kept beside it as deploykit.yml.bak).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_tool.appspec import FILE_NAME, PYTHONS, defaults, render
from deploy_tool.detect import Detected, detect
from deploy_tool.errors import DeployError


@dataclass(frozen=True)
class InitResult:
    path: Path
    outcome: str  # written, unchanged, replaced
    text: str
    detected: Detected


def settings_of(detected: Detected, python: str | None = None) -> dict[str, dict[str, Any]]:
    """deploykit.yml's settings for what was detected; the rest as the schema's defaults."""
    settings = defaults()
    settings["app"].update(name=detected.name, framework=detected.framework, wsgi=detected.wsgi, asgi=detected.asgi,
                           django_settings=detected.django_settings)
    settings["build"]["requirements"] = detected.requirements
    if python is not None:
        if python not in PYTHONS:
            raise DeployError(f"no base image offers Python {python}", hint=f"choose one of: {', '.join(PYTHONS)}")
        settings["build"]["python"] = python
    settings["server"]["names"] = [f"{detected.name}.lab", "localhost", "127.0.0.1"]
    if detected.framework == "django":
        settings["runtime"]["release_command"] = "python manage.py migrate --noinput"
    return settings


def init(directory: Path, force: bool = False, write: bool = True, python: str | None = None,
         **flags: str | None) -> InitResult:
    """Detect, render and (unless write is False) write DIRECTORY/deploykit.yml."""
    detected = detect(directory, **flags)
    text = render(settings_of(detected, python), detected.found)
    path = directory / FILE_NAME
    if not write:
        return InitResult(path, "printed", text, detected)
    if path.exists():
        if path.read_text(encoding="utf-8") == text:
            return InitResult(path, "unchanged", text, detected)
        if not force:
            raise DeployError(f"{path} exists and differs from what init would write now: left as it is",
                              hint="`deploy init --print` shows the new one; --force writes it and keeps yours as "
                                   f"{FILE_NAME}.bak")
        path.replace(path.with_name(FILE_NAME + ".bak"))
        path.write_text(text, encoding="utf-8")
        return InitResult(path, "replaced", text, detected)
    path.write_text(text, encoding="utf-8")
    return InitResult(path, "written", text, detected)
