"""What the cache knows of each upstream's page for a project, without its files: the row
type, the one indexed query that reads it, and the rows-to-states step (shared by
``upstream.pages`` and the services' compiled hot queries, so it imports neither)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select

from index_server.db.schema import upstream_pages


@dataclass(frozen=True)
class PageState:
    """What the cache knows of one upstream's page for a project (without its files)."""

    upstream: str
    status: int
    content_hash: str
    expires_at: datetime
    etag: str | None
    last_modified: str | None


_STATE_COLUMNS = (
    upstream_pages.c.upstream,
    upstream_pages.c.status,
    upstream_pages.c.content_hash,
    upstream_pages.c.expires_at,
    upstream_pages.c.etag,
    upstream_pages.c.last_modified,
)

UPSTREAM_STATES = select(*_STATE_COLUMNS).where(upstream_pages.c.project == bindparam("project"))


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite through a raw DBAPI cursor (see services.HotQueries)
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def states_from_rows(rows: Iterable[Sequence[Any]]) -> dict[str, PageState]:
    return {
        upstream: PageState(upstream, status, digest, _aware(expires), etag, modified)
        for upstream, status, digest, expires, etag, modified in rows
    }
