"""What every view needs: the services, errors with one-line reasons, and auth."""

from __future__ import annotations

import base64
import binascii
import re
from typing import NoReturn

from flask import Response, current_app, g, request
from packaging.utils import canonicalize_name
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from index_server import audit
from index_server.auth import Identity, authenticate
from index_server.services import Services
from platforms import Platform


class HTTPError(HTTPException):
    """An error answered with a one-line plain-text (or JSON, under /api) reason."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(description=message)
        self.code = status
        self.extra_headers = headers or {}


class IdConverter(IntegerConverter):
    """``<int:...>`` for database ids (32-bit): a larger number matches no route, a 404."""

    def __init__(self, url_map, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def has_nul(value: object) -> bool:
    """Whether a NUL character is anywhere in this (JSON) value: PostgreSQL text cannot hold it."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


def refuse_nul() -> None:
    """Before every request: NUL in the path or the query is a 400, never a database error."""
    query = request.query_string
    if "\x00" in request.path or (query and (b"%00" in query or b"\x00" in query)):
        fail(400, "NUL characters are not allowed")


def fail(status: int, message: str, headers: dict[str, str] | None = None) -> NoReturn:
    raise HTTPError(status, message, headers)


# PEP 508's name rule; at most the database's 200 characters.
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
MAX_NAME_LENGTH = 200


def valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and bool(_VALID_NAME.match(name))


def project_name(name: str, status: int = 404) -> str:
    """The canonical (PEP 503) form of a project name from a URL or a body, checked before
    any lookup or upstream request: a name no project can have is a ``status`` (404 in a
    URL, 422 in a body)."""
    if not valid_name(name):
        fail(
            status, f"{name[:100]!r} is not a valid project name (PEP 508, at most 200 characters)"
        )
    return canonicalize_name(name)


def services() -> Services:
    return current_app.extensions["wheelfarm"]  # type: ignore[no-any-return]


def get_platform(name: str) -> Platform:
    platform = services().platforms.get(name)
    if platform is None:
        fail(404, f"unknown platform {name!r}; see /api/platforms for the list")
    return platform


def presented_secret() -> str:
    """The token from HTTP basic auth (password, or username if no password) or Bearer."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    user, _, password = decoded.partition(":")
    return password or user


def identity() -> Identity | None:
    if "identity" not in g:
        svc = services()
        g.identity = authenticate(svc.engine, presented_secret(), svc.settings.admin_token)
        if g.identity is not None:
            audit.authenticated(g.identity.token_id, g.identity.owner)
    return g.identity  # type: ignore[no-any-return]


def require(scope: str) -> Identity:
    who = identity()
    if who is None:
        if presented_secret():
            fail(403, "invalid or revoked token")
        fail(401, "authentication required", {"WWW-Authenticate": 'Basic realm="wheelfarm"'})
    if not who.allows(scope):
        fail(403, f"token scope {who.scope!r} does not allow {scope!r}")
    return who


def require_read() -> None:
    if services().settings.read_requires_token:
        require("read")


def error_response(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = " ".join((exc.description or exc.name).split())[:500]
    # Keep what werkzeug's exception adds (Allow on 405, Content-Range on 416), but our body.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    headers.update(getattr(exc, "extra_headers", {}))
    if exc.code in (301, 302, 307, 308) and hasattr(exc, "new_url"):
        headers["Location"] = exc.new_url
    if request.path.startswith("/api/"):
        import json

        body = json.dumps({"error": message, "status": status}) + "\n"
        response = Response(body, status=status, content_type="application/json")
    else:
        response = Response(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    # Like PyPI, also say it in the status line: twine shows the reason phrase to users.
    reason = message.encode("ascii", "replace").decode()[:200]
    response.status = f"{status} {reason}"
    response.headers.update(headers)
    return response
