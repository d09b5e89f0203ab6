"""The web console: server-rendered pages over the index and the build queue.

``/console/`` (dashboard), ``/console/projects`` (search), ``/console/projects/<name>``
(versions by platforms), ``/console/builds`` and ``/console/builds/<id>`` (with a live log),
and admin actions (rebuild, cancel, skip; a project's owners) after ``/console/login`` with a
token; ``/console/audit`` (admins only) is the audit log with the API's filters. Reading is
open unless ``read_requires_token`` is set; see ``security`` for sessions and CSRF.
Templates are ``index_server/templates/console_*.html`` (Jinja autoescape on).
"""

from __future__ import annotations

from flask import Flask

from index_server.console import formatting, security
from index_server.console.views import bp
from index_server.services import Services

__all__ = ["bp", "init_app"]


def init_app(app: Flask, services: Services) -> None:
    """Set the session key (per data directory), the filters, and the blueprint."""
    security.configure(app, services)
    formatting.register(app)
    app.register_blueprint(bp)
