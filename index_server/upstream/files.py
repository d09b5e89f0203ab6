"""Pulling upstream files through: fetched once, hash-checked, stored, then served.

A file is looked up in the project's cached upstream pages; its bytes are downloaded
once (one download at a time per blob across processes), checked against the sha256 the
page announced, and only then stored and recorded. A mismatch is refused; nothing is kept.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import upstream_files
from index_server.locks import named_lock
from index_server.services import Services
from index_server.simple.model import SimpleFile
from index_server.upstream.fetch import download_verified
from index_server.upstream.pages import load_files, read_states
from storage import blob_key


def find_announced(
    services: Services, project: str, sha256: str, filename: str
) -> SimpleFile | None:
    """The upstream page entry for this file, if a cached page announces it."""
    with read_connection(services.engine) as conn:
        states = read_states(conn, project)
        pages = [states[u] for u in services.settings.upstream_urls if u in states]
        for files in load_files(conn, project, pages):
            for entry in files:
                if entry.filename == filename and entry.hashes.get("sha256") == sha256:
                    return entry
    return None


def is_pulled(services: Services, sha256: str, name: str) -> bool:
    """Whether this upstream blob was pulled through (and so is in storage)."""
    with read_connection(services.engine) as conn:
        found = conn.execute(
            select(upstream_files.c.id).where(
                upstream_files.c.sha256 == sha256, upstream_files.c.filename == name
            )
        ).first()
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
                download_verified(url, sha256, tmp, settings.upstream_timeout)
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
