"""Upstream project pages, cached in the database so every process and node shares them.

Freshness, in one place:
- a page is fresh for ``upstream_ttl`` seconds after it was fetched or revalidated;
- a stale page is revalidated with If-None-Match / If-Modified-Since (a 304 keeps it);
- an upstream "not found" is believed for ``upstream_404_ttl`` seconds; such a row no one
  asked for again in twice that time is removed when another "not found" is stored, so
  anonymous requests for invented (valid) names cannot grow the table without bound;
- if the upstream fails, the stale page is served (marked stale) and retried after
  ``upstream_retry_after`` seconds; a project never fetched gives an "unavailable" result;
- a local write to the project expires its upstream pages at once (see ``expire``);
- ``wheelfarm refresh PROJECT`` refetches whatever the freshness.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import upstream_pages
from index_server.locks import LockTimeout, named_lock
from index_server.services import Services
from index_server.simple.model import SimpleFile
from index_server.upstream.fetch import (
    PageFetch,
    UpstreamError,
    fetch_project_page,
    project_url,
)
from index_server.upstream.parse import files_from_json, files_to_json
from index_server.upstream.states import UPSTREAM_STATES, PageState, states_from_rows

log = logging.getLogger("wheelfarm.upstream")


@dataclass
class UpstreamView:
    """The upstream side of a project page, as of this request."""

    pages: list[PageState] = field(default_factory=list)  # usable pages, upstream order
    stale: list[str] = field(default_factory=list)  # why some pages are served stale
    unavailable: list[str] = field(default_factory=list)  # upstreams with nothing usable

    @property
    def found(self) -> list[PageState]:
        return [p for p in self.pages if p.status == 200]

    def cache_key(self) -> tuple[tuple[str, int, str], ...]:
        return tuple((p.upstream, p.status, p.content_hash) for p in self.pages)


_thread_locks: dict[tuple[str, str], threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def read_states(conn: Connection, project: str) -> dict[str, PageState]:
    """What the cache holds for the project, per upstream (one indexed query)."""
    return states_from_rows(conn.execute(UPSTREAM_STATES, {"project": project}))


def upstream_view(
    services: Services, project: str, states: dict[str, PageState], force: bool = False
) -> UpstreamView:
    """The project's upstream pages, refreshed where stale or when forced.

    ``states`` is what :func:`read_states` returned; call this outside any transaction.
    """
    view = UpstreamView()
    upstreams = services.settings.upstream_urls
    now = datetime.now(UTC)
    for upstream in upstreams:
        state = states.get(upstream)
        if state is None or force or state.expires_at <= now:
            state = _refresh(services, upstream, project, force, view)
        if state is not None:
            view.pages.append(state)
    return view


def _refresh(
    services: Services, upstream: str, project: str, force: bool, view: UpstreamView
) -> PageState | None:
    """Fetch or revalidate one page, one fetch at a time per page across processes."""
    key = (upstream, project)
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(key, threading.Lock())
    settings = services.settings
    lock_dir = settings.data_dir / "locks"
    wait = settings.upstream_timeout * 2 + 5
    try:
        if not thread_lock.acquire(timeout=wait):
            raise LockTimeout(f"page lock busy for {wait}s")
        try:
            with named_lock(services.engine, lock_dir, f"page:{upstream}:{project}", wait):
                with read_connection(services.engine) as conn:
                    state = read_states(conn, project).get(upstream)
                now = datetime.now(UTC)
                if state is not None and state.expires_at > now and not force:
                    return state  # another process refreshed it while we waited
                try:
                    fetched = fetch_project_page(
                        upstream,
                        project,
                        settings.upstream_timeout,
                        etag=state.etag if state and state.status == 200 else None,
                        last_modified=(
                            state.last_modified if state and state.status == 200 else None
                        ),
                        allowed_hosts=settings.upstream_hosts,
                    )
                except UpstreamError as exc:
                    return _failed(services, upstream, project, state, str(exc), view)
                return _store(services, upstream, project, state, fetched)
        finally:
            thread_lock.release()
    except LockTimeout:
        # Another request has been fetching this page for longer than a fetch may take (a
        # trickling upstream): answer with what the cache holds rather than wait on.
        error = (
            f"{project_url(upstream, project)}: another request has been fetching this page "
            f"for over {wait:g}s"
        )
        with read_connection(services.engine) as conn:
            state = read_states(conn, project).get(upstream)
        (view.stale if state is not None else view.unavailable).append(error)
        return state


def _failed(
    services: Services,
    upstream: str,
    project: str,
    state: PageState | None,
    error: str,
    view: UpstreamView,
) -> PageState | None:
    if state is None:
        log.warning("upstream unavailable for new project %s: %s", project, error)
        view.unavailable.append(error)
        return None
    log.warning("serving stale upstream page for %s: %s", project, error)
    view.stale.append(error)
    retry_at = datetime.now(UTC) + timedelta(seconds=services.settings.upstream_retry_after)
    with write_transaction(services.engine) as conn:
        conn.execute(
            update(upstream_pages)
            .where(upstream_pages.c.upstream == upstream, upstream_pages.c.project == project)
            .values(expires_at=retry_at, last_error=error[:2000])
        )
    return PageState(
        upstream, state.status, state.content_hash, retry_at, state.etag, state.last_modified
    )


def _store(
    services: Services,
    upstream: str,
    project: str,
    state: PageState | None,
    fetched: PageFetch,
) -> PageState:
    settings = services.settings
    now = datetime.now(UTC)
    status = fetched.status
    values: dict[str, object] = {"fetched_at": now, "last_error": None}
    if status == 304 and state is not None:
        status = state.status
        content_hash = state.content_hash
        etag, last_modified = state.etag, state.last_modified
    else:
        files = getattr(fetched, "files", None) or []
        files_json = files_to_json(files) if status == 200 else "[]"
        content_hash = hashlib.sha256(files_json.encode()).hexdigest()
        etag, last_modified = (
            getattr(fetched, "etag", None),
            getattr(fetched, "last_modified", None),
        )
        values.update(files=files_json)
    ttl = settings.upstream_ttl if status == 200 else settings.upstream_404_ttl
    expires_at = now + timedelta(seconds=ttl)
    values.update(
        status=status,
        content_hash=content_hash,
        etag=etag,
        last_modified=last_modified,
        expires_at=expires_at,
    )
    with write_transaction(services.engine) as conn:
        if "files" in values:
            _upsert(conn, upstream, project, values)
            if status == 404:
                _forget_old_not_found(conn, now, now - timedelta(seconds=2 * ttl))
        else:
            conn.execute(
                update(upstream_pages)
                .where(upstream_pages.c.upstream == upstream, upstream_pages.c.project == project)
                .values(**values)
            )
    return PageState(upstream, status, content_hash, expires_at, etag, last_modified)


def _forget_old_not_found(conn: Connection, now: datetime, before: datetime) -> None:
    """Drop "not found" rows fetched before ``before`` and expired: a cache of nothing,
    which a new request refetches anyway (fetched_at is indexed, so only old rows are read)."""
    conn.execute(
        delete(upstream_pages).where(
            upstream_pages.c.fetched_at < before,
            upstream_pages.c.status == 404,
            upstream_pages.c.expires_at < now,
        )
    )


def _upsert(conn: Connection, upstream: str, project: str, values: dict[str, object]) -> None:
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(upstream_pages).values(upstream=upstream, project=project, **values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[upstream_pages.c.upstream, upstream_pages.c.project],
            set_=values,
        )
    )


def load_files(conn: Connection, project: str, pages: list[PageState]) -> list[list[SimpleFile]]:
    """The files of the given pages, in their order."""
    wanted = [p.upstream for p in pages if p.status == 200]
    if not wanted:
        return []
    rows = conn.execute(
        select(upstream_pages.c.upstream, upstream_pages.c.files).where(
            upstream_pages.c.project == project, upstream_pages.c.upstream.in_(wanted)
        )
    )
    by_upstream = {r.upstream: r.files for r in rows}
    return [files_from_json(by_upstream[u]) for u in wanted if u in by_upstream]


def expire(conn: Connection, project: str) -> None:
    """Make the project's upstream pages stale now (called on every local write)."""
    conn.execute(
        update(upstream_pages)
        .where(upstream_pages.c.project == project)
        .values(expires_at=datetime.now(UTC))
    )
