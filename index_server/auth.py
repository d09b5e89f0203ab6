"""API tokens: created once, stored hashed, checked in constant time, scoped.

A token is ``wf_`` and 43 url-safe characters (256 random bits). Only its SHA-256 is kept:
with that much entropy a slow hash adds nothing, and the lookup by hash reveals nothing
about the secret through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

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


class TokenNameTaken(ValueError):
    """Token names are unique: the audit log and the trail name them."""


@dataclass(frozen=True)
class Identity:
    name: str
    scope: str
    token_id: int | None = None
    owner: str | None = None  # the user or team it belongs to (None: the admin token)
    projects: tuple[str, ...] | None = None  # names/globs it may write (None: any)
    platform: str | None = None  # a build token's platform (None: any)
    worker: str | None = None  # a build token's worker name (None: any)

    def allows(self, needed: str) -> bool:
        return needed in _IMPLIED.get(self.scope, set())

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def may_write(self, project: str) -> bool:
        """Whether the token's project scope covers this (canonical) name."""
        if self.projects is None:
            return True
        return any(fnmatchcase(project, pattern) for pattern in self.projects)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    engine: Engine,
    name: str,
    scope: str,
    *,
    owner: str | None = None,
    projects: Sequence[str] | None = None,
    platform: str | None = None,
    worker: str | None = None,
    actor: str = "cli",
) -> tuple[int, str]:
    """A new token; the secret is returned once and never stored.

    ``owner`` is the user or team it belongs to (default: its name); ``projects`` limits
    what it may write (names or globs); a build token may be bound to a ``platform`` and a
    ``worker`` name.
    """
    from index_server import repository

    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
    if (platform or worker) and scope != "build":
        raise ValueError("only a build token is bound to a platform or a worker")
    secret = PREFIX + secrets.token_urlsafe(32)
    scoped = None if projects is None else json.dumps(sorted(set(projects)))
    try:
        with write_transaction(engine) as conn:
            token_id = conn.execute(
                insert(tokens)
                .values(
                    name=name,
                    scope=scope,
                    owner=owner or name,
                    projects=scoped,
                    platform=platform,
                    worker=worker,
                    token_hash=hash_token(secret),
                    prefix=secret[:10],
                    created_at=datetime.now(UTC),
                )
                .returning(tokens.c.id)
            ).scalar_one()
            detail = {"scope": scope, "owner": owner or name, "projects": projects}
            if platform or worker:
                detail.update(platform=platform, worker=worker)
            repository.record_event(
                conn, actor, "token create", None, None, f"token {token_id} {name!r}: {detail}"
            )
    except IntegrityError:
        raise TokenNameTaken(f"a token named {name!r} exists already; names are unique") from None
    return token_id, secret


def revoke_token(engine: Engine, token_id: int, actor: str = "cli") -> bool:
    from index_server import repository

    with write_transaction(engine) as conn:
        result = conn.execute(
            update(tokens)
            .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
        if result.rowcount > 0:
            repository.record_event(conn, actor, "token revoke", None, None, f"token {token_id}")
    return result.rowcount > 0


def list_tokens(engine: Engine) -> list[dict[str, object]]:
    with read_connection(engine) as conn:
        rows = conn.execute(select(tokens).order_by(tokens.c.id)).mappings().all()
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "scope": r["scope"],
            "owner": r["owner"] or r["name"],
            "projects": json.loads(r["projects"]) if r["projects"] else None,
            "platform": r["platform"],
            "worker": r["worker"],
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
            select(*_IDENTITY_COLUMNS, tokens.c.token_hash).where(
                tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None)
            )
        ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return identity_of(row)


_IDENTITY_COLUMNS = (
    tokens.c.id,
    tokens.c.name,
    tokens.c.scope,
    tokens.c.owner,
    tokens.c.projects,
    tokens.c.platform,
    tokens.c.worker,
)


def identity_of(row: object) -> Identity:
    """The identity of a token row (``_IDENTITY_COLUMNS``)."""
    projects = json.loads(row.projects) if row.projects else None  # type: ignore[attr-defined]
    return Identity(
        name=f"token:{row.name}",  # type: ignore[attr-defined]
        scope=row.scope,  # type: ignore[attr-defined]
        token_id=row.id,  # type: ignore[attr-defined]
        owner=row.owner or row.name,  # type: ignore[attr-defined]
        projects=tuple(projects) if projects is not None else None,
        platform=row.platform,  # type: ignore[attr-defined]
        worker=row.worker,  # type: ignore[attr-defined]
    )


def token_identity(engine: Engine, token_id: int) -> Identity | None:
    """A live token's identity by id (console sessions keep the id, not the secret)."""
    with read_connection(engine) as conn:
        row = conn.execute(
            select(*_IDENTITY_COLUMNS).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
        ).first()
    return identity_of(row) if row else None
