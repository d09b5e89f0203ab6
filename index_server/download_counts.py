"""Downloads per project and day: what "recently downloaded" means (backfill order).

Counted in memory per process and added to ``project_downloads`` in batches, so a download
costs no database write of its own; a process that dies loses at most its last batch.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from index_server.db.engine import write_transaction
from index_server.db.schema import project_downloads

if TYPE_CHECKING:
    from typing import Protocol

    from sqlalchemy import Engine

    class Services(Protocol):  # what this module uses of index_server.services.Services
        engine: Engine


DOWNLOAD_WINDOW_DAYS = 30


def _now() -> datetime:
    return datetime.now(UTC)


def _insert(conn: Connection):  # type: ignore[no-untyped-def]
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


class DownloadCounter:
    """Downloads per project, counted in memory and added to the database in batches
    (at most every ``flush_seconds``), so a download costs no write of its own."""

    def __init__(self, flush_seconds: float = 10.0) -> None:
        self.flush_seconds = flush_seconds
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.flushed_at = time.monotonic()

    def note(self, services: Services, project: str) -> None:
        with self.lock:
            self.counts[project] += 1
            due = time.monotonic() - self.flushed_at >= self.flush_seconds
        if due:
            self.flush(services)

    def flush(self, services: Services) -> None:
        with self.lock:
            counts, self.counts = self.counts, Counter()
            self.flushed_at = time.monotonic()
        if not counts:
            return
        day = _now().date().isoformat()
        with write_transaction(services.engine) as conn:
            for project, count in sorted(counts.items()):
                conn.execute(
                    _insert(conn)(project_downloads)
                    .values(project=project, day=day, count=count)
                    .on_conflict_do_update(
                        index_elements=[project_downloads.c.project, project_downloads.c.day],
                        set_={"count": project_downloads.c.count + count},
                    )
                )


def recent_downloads(conn: Connection, days: int = DOWNLOAD_WINDOW_DAYS) -> dict[str, int]:
    since = (_now().date() - timedelta(days=days)).isoformat()
    rows = conn.execute(
        select(project_downloads.c.project, func.sum(project_downloads.c.count))
        .where(project_downloads.c.day >= since)
        .group_by(project_downloads.c.project)
    )
    return {project: int(total) for project, total in rows}
