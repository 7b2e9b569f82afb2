#!/usr/bin/env python3
"""deploykit-build: the checks `deploy build` runs inside an app's image, while it is built (apps/app.Dockerfile).

It imports the app exactly as the servers will (deploykit_wsgi, from the app's directory, an app factory
called; and its ASGI entry, if deploykit.yml names one), so a missing module or a settings error fails the
build with the app's own traceback, before anything is shipped. Then, for Django, `collectstatic` (when
build.json asks for it). Last, it writes where the app's static files are (/opt/deploykit/static.json: url and
root, or nothing), which the deploy copies to the hosts for nginx. build.json holds the build's own
environment (deploykit.yml build.env: never secrets).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from deploykit_serve import Settings, served_app, server_environment

HERE = Path(__file__).resolve().parent


def static_files(framework: str, app: Any) -> dict[str, str]:
    """{url, root} of the app's static files once collected, or {} when it has none."""
    if framework == "django":
        from django.conf import settings

        root = getattr(settings, "STATIC_ROOT", None)
        return {"url": str(settings.STATIC_URL), "root": str(root)} if root and Path(root).is_dir() else {}
    folder = getattr(app, "static_folder", None)
    if folder and Path(folder).is_dir():
        return {"url": str(app.static_url_path).rstrip("/") + "/", "root": str(folder)}
    return {}


def unwrapped(target: str) -> Any:
    """The app object itself (a Flask app's static folder is an attribute of it), factory called."""
    import deploykit_wsgi

    return deploykit_wsgi.load(target)


def main() -> int:
    config = json.loads((HERE / "build.json").read_text(encoding="utf-8"))
    os.environ.update(config["env"])
    settings = Settings.from_env(dict(os.environ, DEPLOYKIT_VARIANT="gunicorn-sync"))
    os.environ.update(server_environment(settings, {}))
    try:
        served_app(settings)
        if settings.asgi:  # the ASGI variants' entry (deploykit.yml app.asgi) must load too, as they load it
            os.environ.update(server_environment(settings, {"interface": "asgi"}))
            served_app(settings, "deploykit_asgi")
        app = unwrapped(settings.target) if config["framework"] == "flask" else None
        if config["framework"] == "django" and config["collectstatic"]:
            from django.core.management import call_command

            call_command("collectstatic", "--noinput", verbosity=0)
        found = static_files(config["framework"], app)
    except Exception:  # noqa: BLE001 - the app's own error, whatever it is, is the build's answer
        traceback.print_exc()
        print(f"deploykit-build: the app ({settings.target}) cannot be loaded as the servers would load it: "
              "see its error above (deploykit.yml build.env sets environment for this check)", file=sys.stderr)
        return 1
    (HERE / "static.json").write_text(json.dumps(found), encoding="utf-8")
    print(f"deploykit-build: {settings.target} loads; static files: {found or 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
