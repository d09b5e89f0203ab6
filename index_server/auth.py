"""API tokens: created once, stored hashed, checked in constant time, scoped.

A token is ``wf_`` and 43 url-safe characters (256 random bits). Only its SHA-256 is kept:
with that much entropy a slow hash adds nothing, and the lookup by hash reveals nothing
about the secret through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select, update

from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import tokens

PREFIX = "wf_"
# What each scope may do; admin may do everything.
SCOPES = ("read", "upload", "build", "admin")
_IMPLIED = {
    "read": {"read"},
    "upload": {"read", "upload"},
    "build": {"read", "build"},
    "admin": set(SCOPES),
}


@dataclass(frozen=True)
class Identity:
    name: str
    scope: str
    token_id: int | None = None

    def allows(self, needed: str) -> bool:
        return needed in _IMPLIED.get(self.scope, set())


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(engine: Engine, name: str, scope: str) -> tuple[int, str]:
    """A new token; the secret is returned once and never stored."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
    secret = PREFIX + secrets.token_urlsafe(32)
    with write_transaction(engine) as conn:
        token_id = conn.execute(
            insert(tokens)
            .values(
                name=name,
                scope=scope,
                token_hash=hash_token(secret),
                prefix=secret[:10],
                created_at=datetime.now(UTC),
            )
            .returning(tokens.c.id)
        ).scalar_one()
    return token_id, secret


def revoke_token(engine: Engine, token_id: int) -> bool:
    with write_transaction(engine) as conn:
        result = conn.execute(
            update(tokens)
            .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    return result.rowcount > 0


def list_tokens(engine: Engine) -> list[dict[str, object]]:
    with read_connection(engine) as conn:
        rows = conn.execute(select(tokens).order_by(tokens.c.id)).mappings().all()
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "scope": r["scope"],
            "prefix": r["prefix"],
            # SQLite gives naive datetimes back: they are UTC, and say so like every other time.
            "created_at": r["created_at"].replace(tzinfo=r["created_at"].tzinfo or UTC).isoformat(),
            "revoked": r["revoked_at"] is not None,
        }
        for r in rows
    ]


def authenticate(engine: Engine, secret: str, admin_token: str | None) -> Identity | None:
    """The identity behind a presented secret, or None if it is unknown or revoked."""
    if not secret:
        return None
    if admin_token and hmac.compare_digest(secret.encode(), admin_token.encode()):
        return Identity(name="admin (WHEELFARM_ADMIN_TOKEN)", scope="admin")
    digest = hash_token(secret)
    with read_connection(engine) as conn:
        row = conn.execute(
            select(tokens.c.id, tokens.c.name, tokens.c.scope, tokens.c.token_hash).where(
                tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None)
            )
        ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Identity(name=f"token:{row.name}", scope=row.scope, token_id=row.id)
