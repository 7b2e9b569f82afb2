"""WSGI adapters the launcher can put around an app, named by a variant's `wrap` in apps/variants.yml.

The launcher points the server at `deploykit_wsgi:application` and passes the real app as
DEPLOYKIT_WSGI_TARGET (module:callable) and the adapter as DEPLOYKIT_WSGI_WRAP.
"""

from __future__ import annotations

import importlib
import os


def strip_header_whitespace(app):
    """Tornado's WSGIContainer rejects header values with leading whitespace, and Django writes Set-Cookie
    values with one (SimpleCookie.output(header="")): the request then dies without an answer."""

    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [(name, value.strip()) for name, value in headers], exc_info)

        return app(environ, start)

    return wrapped


ADAPTERS = {"strip_header_whitespace": strip_header_whitespace}


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


if "DEPLOYKIT_WSGI_TARGET" in os.environ:
    application = ADAPTERS[os.environ["DEPLOYKIT_WSGI_WRAP"]](_load(os.environ["DEPLOYKIT_WSGI_TARGET"]))
