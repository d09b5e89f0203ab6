"""Keeping an export current: one full export, then the changes the database records.

Every write to the index (upload, yank, unyank, delete, a build's wheel) bumps the index
serial and stamps the project with it (``repository``), in every server process and on
every node. So the database is the change log: a follower polls the index serial (one
indexed lookup), and when it moved re-exports the projects stamped since, and the root
pages. Upstream pages refreshed by a server are found by their ``fetched_at``. No server
process needs to know that an export exists.

Merged upstream pages and their TTL: an exported page that merges upstream pages is taken
out of the export when the first of those pages goes stale (``WHEELFARM_UPSTREAM_TTL``
after it was fetched). The next request for it then misses, reaches the server, which
revalidates with the upstream as it always does, and the follower writes the refreshed
page back. An exported merged page is so never older than the server's own, and the
upstream sees no more requests than without an export.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from index_server.db.engine import read_connection
from index_server.db.schema import projects, upstream_pages
from index_server.export.content import (
    File,
    Page,
    ProjectExport,
    page_folder,
    project_export,
    root_pages,
)
from index_server.export.targets import ExportTarget
from index_server.services import Services
from index_server.upstream.states import _aware

log = logging.getLogger("wheelfarm.export")
ROOT_NAMES = ("index.html", "index.html.gz", "index.json", "index.json.gz")

# How far back upstream fetches are looked at again: covers clock differences between the
# servers that stamp ``fetched_at`` and transactions that commit late.
FETCH_MARGIN = timedelta(seconds=5)
RETRY_AFTER = 1.0  # seconds after a failed step


class ReadProtected(RuntimeError):
    pass


@dataclass
class ExportStats:
    pages_written: int = 0
    files_written: int = 0
    removed: int = 0
    projects: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"projects={self.projects} pages_written={self.pages_written} "
            f"files_written={self.files_written} removed={self.removed} "
            f"seconds={self.seconds:.3f}"
        )


@dataclass
class Cursor:
    """How far the follower has exported."""

    serial: int
    fetched_since: datetime
    fetched_seen: dict[str, datetime] = field(default_factory=dict)


class Exporter:
    def __init__(self, services: Services, target: ExportTarget) -> None:
        if services.settings.read_requires_token:
            raise ReadProtected(
                "the export is for open-read indexes: with WHEELFARM_READ_REQUIRES_TOKEN "
                "every read needs a token, which static files cannot check"
            )
        self.services = services
        self.target = target
        # What the target holds, as far as we know, by (platform, "simple"|"files", project).
        self.present: dict[tuple[str, str, str], set[str]] = {}
        self.upstream_expires: dict[str, datetime] = {}  # merged projects: first staleness

    # --- writing ------------------------------------------------------------------------

    def _write_pages(self, pages: dict[str, Page], stats: ExportStats) -> None:
        for path, page in pages.items():
            if self.target.write_page(path, page.body, page.gzipped, page.content_type):
                stats.pages_written += 1
            self._held(path).update((path, path + ".gz"))

    def _write_files(self, files: dict[str, File], stats: ExportStats) -> None:
        missing = []
        for path, entry in files.items():
            if path in self._held(path):
                continue  # files are immutable
            try:
                self.target.write_file(path, self.services.storage, entry.key, entry.content_type)
            except FileNotFoundError:
                missing.append(path)  # left to the server, which answers 404 for it
                continue
            self._held(path).add(path)
            stats.files_written += 1
        if missing:
            log.warning("export: %d files missing from storage, e.g. %s", len(missing), missing[0])

    def _remove(self, paths: Iterable[str], stats: ExportStats) -> None:
        # Pages before their .gz twins (sorted puts "index.html" before "index.html.gz").
        for path in sorted(paths):
            self.target.remove(path)
            self._held(path).discard(path)
            stats.removed += 1

    def _held(self, path: str) -> set[str]:
        return self.present.setdefault(group_of(path), set())

    def _under(self, platform: str, kind: str, project: str) -> set[str]:
        return set(self.present.get((platform, kind, project), ()))

    def export_project(self, project: str, stats: ExportStats | None = None) -> ExportStats:
        """Make the project's pages and files on every platform what the server serves."""
        stats = stats or ExportStats()
        expires: list[datetime] = []
        for platform in self.services.platforms.values():
            exported: ProjectExport = project_export(self.services, platform, project)
            self._write_files(exported.files, stats)
            self._write_pages(exported.pages, stats)
            wanted = set(exported.files) | {p + s for p in exported.pages for s in ("", ".gz")}
            stale = (
                self._under(platform.name, "simple", project)
                | self._under(platform.name, "files", project)
            ) - wanted
            self._remove(stale, stats)
            if exported.upstream_expires is not None and exported.pages:
                expires.append(exported.upstream_expires)
        if expires:
            self.upstream_expires[project] = min(expires)
        else:
            self.upstream_expires.pop(project, None)
        stats.projects += 1
        return stats

    def export_roots(self, stats: ExportStats | None = None) -> ExportStats:
        stats = stats or ExportStats()
        for platform in self.services.platforms.values():
            self._write_pages(root_pages(self.services, platform), stats)
        return stats

    def withdraw_pages(self, project: str, stats: ExportStats) -> None:
        """Take the project's pages out (its files stay: they never change)."""
        for platform in self.services.platforms:
            self._remove(self._under(platform, "simple", project), stats)
        self.upstream_expires.pop(project, None)

    # --- whole exports and following ----------------------------------------------------

    def full_export(self) -> tuple[Cursor, ExportStats]:
        """Everything, and nothing else: repairs any drift (and removes temporaries)."""
        began = time.perf_counter()
        stats = ExportStats()
        self.target.remove_temporaries()
        self.present = {}
        for path in self.target.list():
            self._held(path).add(path)
        cursor = self._cursor_now()
        with read_connection(self.services.engine) as conn:
            names = set(conn.execute(select(projects.c.name)).scalars())
            names |= set(
                conn.execute(
                    select(upstream_pages.c.project).where(upstream_pages.c.status == 200)
                ).scalars()
            )
        for name in sorted(names):
            self.export_project(name, stats)
        self.export_roots(stats)
        # Whatever lies outside the projects and platforms we know: no page links to it.
        for (platform, kind, project), paths in list(self.present.items()):
            known = platform in self.services.platforms and (
                project in names if project else kind == "simple"
            )
            if not known:
                self._remove(paths, stats)
            elif not project:  # the root folder holds its two pages and their twins only
                self._remove(paths - {page_folder(platform) + n for n in ROOT_NAMES}, stats)
        stats.seconds = time.perf_counter() - began
        return cursor, stats

    def _cursor_now(self) -> Cursor:
        with read_connection(self.services.engine) as conn:
            latest = conn.execute(select(func.max(upstream_pages.c.fetched_at))).scalar()
        since = _aware(latest) if latest else datetime.now(UTC)
        return Cursor(self.services.hot.index_serial(), since)

    def step(self, cursor: Cursor) -> ExportStats:
        """Export what changed since ``cursor`` (and advance it)."""
        stats = ExportStats()
        changed: set[str] = set()
        serial = self.services.hot.index_serial()
        roots = serial != cursor.serial
        with read_connection(self.services.engine) as conn:
            if roots:
                changed.update(
                    conn.execute(
                        select(projects.c.name).where(projects.c.serial > cursor.serial)
                    ).scalars()
                )
            since = cursor.fetched_since - FETCH_MARGIN
            rows = conn.execute(
                select(upstream_pages.c.project, func.max(upstream_pages.c.fetched_at))
                .where(upstream_pages.c.fetched_at > since)
                .group_by(upstream_pages.c.project)
            ).all()
        seen = dict(cursor.fetched_seen)
        latest = cursor.fetched_since
        for project, fetched in rows:
            fetched = _aware(fetched)
            if seen.get(project) != fetched:
                changed.add(project)
                seen[project] = fetched
            latest = max(latest, fetched)
        for project in sorted(changed):
            self.export_project(project, stats)
        if roots:
            self.export_roots(stats)
        # Only now, so that a step that failed half-way is done again in full.
        cursor.serial = serial
        cursor.fetched_since = latest
        cursor.fetched_seen = {p: t for p, t in seen.items() if t > latest - FETCH_MARGIN}
        now = datetime.now(UTC)
        for project in [p for p, t in self.upstream_expires.items() if t <= now]:
            self.withdraw_pages(project, stats)
        return stats

    def follow(self, poll: float, stop: Callable[[], bool] = lambda: False) -> None:
        cursor, stats = self.full_export()
        log.info("export done %s target=%r", stats.line(), self.target)
        while not stop():
            began = time.perf_counter()
            try:
                stats = self.step(cursor)
            except Exception:
                # The database or the target is away for a moment: try the same step again.
                log.exception("export step failed; retrying in %.0f s", RETRY_AFTER)
                time.sleep(RETRY_AFTER)
                continue
            if stats.projects or stats.removed or stats.pages_written:
                stats.seconds = time.perf_counter() - began
                log.info("export changes %s serial=%d", stats.line(), cursor.serial)
            time.sleep(poll)


def group_of(path: str) -> tuple[str, str, str]:
    """(platform, "simple" or "files", project or "" for the root list) of an export path."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] in ("simple", "files"):
        project = parts[2] if len(parts) > 3 else ""
        return parts[0], parts[1], project
    return "", "", path  # not of ours: a stray
