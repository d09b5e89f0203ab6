"""The console's login and form protection.

* The session lives in Flask's signed cookie. Its key is random per data directory, kept at
  ``<data_dir>/secret_key`` (mode 0600) so every worker process, and a restarted server,
  signs with the same key. The first process to need it creates it atomically: a private
  temporary file is written, then hard-linked into place, which fails if another process
  won the race; everyone then reads the one file.
* Logging in takes an API token, checked with ``index_server.auth.authenticate``. The session
  keeps who it is, not the secret: a database token's id (re-checked on every request, so a
  revoked token ends its sessions) or, for ``WHEELFARM_ADMIN_TOKEN``, an HMAC of it under the
  secret key (so changing that token ends those sessions).
* Every POST form carries the session's CSRF token, compared in constant time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask, Request, current_app, g, session
from flask import request as flask_request
from flask.sessions import SecureCookieSessionInterface, SessionMixin

from index_server import audit, repository
from index_server.auth import Identity, authenticate, token_identity
from index_server.db.engine import write_transaction
from index_server.services import Services

log = logging.getLogger("wheelfarm.console")

SECRET_KEY_FILE = "secret_key"
SESSION_LIFETIME = timedelta(hours=12)
CSRF_FIELD = "csrf_token"


def load_secret_key(data_dir: Path) -> bytes:
    """The data directory's session-signing key, made on first use (0600, atomically)."""
    path = data_dir / SECRET_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) >= 32:
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(64))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic create-if-absent: the first process wins
    finally:
        tmp.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) < 32:
        raise RuntimeError(f"{path}: the session key is too short; delete the file")
    return key


class ConsoleSessions(SecureCookieSessionInterface):
    """Sessions for the console only: index pages, files and the API never need one, and
    opening a signed cookie on each of their requests costs the hot path dearly."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if not request.path.startswith("/console"):
            return self.null_session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """``Secure`` whenever the request came over TLS (directly, or through a proxy that
        says so: gunicorn's forwarded_allow_ips, or ``trusted_proxies``)."""
        return bool(super().get_cookie_secure(app) or flask_request.is_secure)


def configure(app: Flask, services: Services) -> None:
    app.session_interface = ConsoleSessions()
    shared = services.settings.secret_key
    app.secret_key = shared.encode() if shared else load_secret_key(services.settings.data_dir)
    app.config.update(
        SESSION_COOKIE_NAME="wheelfarm_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )


def _fingerprint(secret: str) -> str:
    key = current_app.secret_key
    assert isinstance(key, bytes)
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def csrf_token() -> str:
    """This session's CSRF token (made on first use, which starts a session cookie)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok(presented: str | None) -> bool:
    expected = session.get("csrf")
    return bool(
        presented
        and isinstance(expected, str)
        and secrets.compare_digest(presented.encode(), expected.encode())
    )


def log_in(services: Services, secret: str) -> Identity | None:
    """Start a session for a valid token allowed to read; None if the token is refused."""
    who = authenticate(services.engine, secret.strip(), services.settings.admin_token)
    if who is None or not who.allows("read"):
        log.warning("console login refused", extra={"event": "console_login_refused"})
        return None
    session.clear()  # a fresh session: no fixation, a new CSRF token
    session.permanent = True
    session["who"] = who.name
    session["scope"] = who.scope
    if who.token_id is not None:
        session["token_id"] = who.token_id
    else:
        session["admin_fp"] = _fingerprint(secret.strip())
    csrf_token()
    audit.authenticated(who.token_id, who.owner)
    with write_transaction(services.engine) as conn:
        repository.record_event(conn, who.name, "console login", None, None, who.scope)
    log.info("console login", extra={"event": "console_login", "who": who.name})
    g.pop("console_user", None)
    return who


def log_out(services: Services) -> None:
    """End the session; the audit log notes whose (nothing if it was no one's)."""
    who = current_user(services)
    if who is not None:
        with write_transaction(services.engine) as conn:
            repository.record_event(conn, who.name, "console logout", None, None, who.scope)
    session.clear()
    g.pop("console_user", None)


def current_user(services: Services) -> Identity | None:
    """Who this session is logged in as, if the token behind it is still valid."""
    if "console_user" in g:
        return g.console_user  # type: ignore[no-any-return]
    g.console_user = _session_identity(services)
    return g.console_user  # type: ignore[no-any-return]


def _session_identity(services: Services) -> Identity | None:
    name, scope = session.get("who"), session.get("scope")
    if not isinstance(name, str) or not isinstance(scope, str):
        return None
    token_id = session.get("token_id")
    if isinstance(token_id, int):
        who = token_identity(services.engine, token_id)
        if who is None or who.scope != scope:
            return None
        audit.authenticated(who.token_id, who.owner)
        return who
    admin_token = services.settings.admin_token
    presented = session.get("admin_fp")
    if not admin_token or not isinstance(presented, str):
        return None
    if not hmac.compare_digest(presented, _fingerprint(admin_token)):
        return None
    return Identity(name=name, scope=scope)
