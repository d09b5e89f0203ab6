"""Pulling upstream files through: fetched once, hash-checked, stored, then served.

A file is looked up in the project's cached upstream pages; its bytes are downloaded
once (one download at a time per blob across processes), checked against the sha256 the
page announced, and only then stored and recorded. A mismatch is refused; nothing is kept.
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import upstream_files
from index_server.locks import named_lock
from index_server.services import Services
from index_server.simple.model import SimpleFile
from index_server.upstream.fetch import download_verified
from index_server.upstream.pages import PageState, load_files
from storage import blob_key

# Per process: the files each cached upstream page announces, by (upstream, project,
# content hash): a changed page has another hash, so an entry is never stale, only unused.
_ANNOUNCED_PAGES = 512
_announced: OrderedDict[tuple[str, str, str], dict[tuple[str, str], SimpleFile]] = OrderedDict()
# Per process: blobs known to be pulled through (their rows are never removed).
_PULLED_KEPT = 100_000
_pulled: set[tuple[str, str]] = set()
_memo_lock = threading.Lock()


def find_announced(
    services: Services, project: str, sha256: str, filename: str
) -> SimpleFile | None:
    """The upstream page entry for this file, if a cached page announces it.

    One indexed lookup of the project's page states; a page's files are parsed once per
    process and version of the page, not on every download.
    """
    states = services.hot.upstream_states(project)
    for upstream in services.settings.upstream_urls:
        state = states.get(upstream)
        if state is None or state.status != 200:
            continue
        entry = _announced_files(services, project, state).get((filename, sha256))
        if entry is not None:
            return entry
    return None


def _announced_files(
    services: Services, project: str, state: PageState
) -> dict[tuple[str, str], SimpleFile]:
    key = (state.upstream, project, state.content_hash)
    with _memo_lock:
        found = _announced.get(key)
        if found is not None:
            _announced.move_to_end(key)
            return found
    with read_connection(services.engine) as conn:
        pages = load_files(conn, project, [state])
    found = {(f.filename, f.hashes.get("sha256", "")): f for page in pages for f in page}
    with _memo_lock:
        _announced[key] = found
        while len(_announced) > _ANNOUNCED_PAGES:
            _announced.popitem(last=False)
    return found


def is_pulled(services: Services, sha256: str, name: str) -> bool:
    """Whether this upstream blob was pulled through (and so is in storage)."""
    if (sha256, name) in _pulled:
        return True
    with read_connection(services.engine) as conn:
        found = conn.execute(
            select(upstream_files.c.id).where(
                upstream_files.c.sha256 == sha256, upstream_files.c.filename == name
            )
        ).first()
    if found is not None:
        with _memo_lock:
            if len(_pulled) >= _PULLED_KEPT:
                _pulled.clear()
            _pulled.add((sha256, name))
    return found is not None


def pull_through(services: Services, project: str, name: str, url: str, sha256: str) -> None:
    """Make sure blob ``sha256`` (the file or .metadata ``name``) is stored: one download."""
    settings = services.settings
    storage = services.storage
    key = blob_key(sha256)
    lock_wait = settings.upstream_timeout * 6 + 30
    with named_lock(services.engine, settings.data_dir / "locks", f"blob:{key}", lock_wait):
        if is_pulled(services, sha256, name) and storage.exists(key):
            return  # another request pulled it while we waited for the lock
        if not storage.exists(key):
            with tempfile.TemporaryFile(dir=settings.data_dir) as tmp:
                download_verified(
                    url,
                    sha256,
                    tmp,
                    settings.upstream_timeout,
                    allowed_hosts=settings.upstream_hosts,
                    max_bytes=settings.upstream_max_file_bytes,
                )
                tmp.seek(0)
                storage.put(key, tmp)
        try:
            with write_transaction(services.engine) as conn:
                conn.execute(
                    upstream_files.insert().values(
                        sha256=sha256,
                        filename=name,
                        project=project,
                        size=storage.size(key),
                        source_url=url,
                        fetched_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            pass  # recorded by another node already
