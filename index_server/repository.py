"""Queries and writes over the index's tables. Callers hold the connection/transaction.

Every write bumps the index serial and stamps the touched project with it, so a page
cached under an older serial is known stale at once, in every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from index_server import audit
from index_server.audit import EventFilter
from index_server.db.schema import (
    ALL_PLATFORMS,
    audit_events,
    build_jobs,
    file_tombstones,
    files,
    index_state,
    projects,
)


@dataclass(frozen=True)
class ProjectState:
    id: int
    name: str
    display_name: str
    serial: int
    hosted: bool


@dataclass(frozen=True)
class FileRecord:
    id: int
    project: str
    platform: str
    filename: str
    version: str
    packagetype: str
    sha256: str
    size: int
    requires_python: str | None
    metadata_sha256: str | None
    yanked: bool
    yanked_reason: str | None
    uploaded_at: datetime
    uploaded_by: str
    origin: str


_FILE_COLUMNS = (
    files.c.id,
    projects.c.name.label("project"),
    files.c.platform,
    files.c.filename,
    files.c.version,
    files.c.packagetype,
    files.c.sha256,
    files.c.size,
    files.c.requires_python,
    files.c.metadata_sha256,
    files.c.yanked,
    files.c.yanked_reason,
    files.c.uploaded_at,
    files.c.uploaded_by,
    files.c.origin,
)


def _file(row: object) -> FileRecord:
    record = FileRecord(*row)  # type: ignore[misc]
    if record.uploaded_at.tzinfo is None:  # SQLite returns naive datetimes
        record = _replace_time(record)
    return record


def _replace_time(record: FileRecord) -> FileRecord:
    from dataclasses import replace

    return replace(record, uploaded_at=record.uploaded_at.replace(tzinfo=UTC))


INDEX_SERIAL = select(index_state.c.serial).where(index_state.c.id == 1)


def index_serial(conn: Connection) -> int:
    return conn.execute(INDEX_SERIAL).scalar_one()


def next_serial(conn: Connection) -> int:
    return conn.execute(
        update(index_state)
        .where(index_state.c.id == 1)
        .values(serial=index_state.c.serial + 1)
        .returning(index_state.c.serial)
    ).scalar_one()


PROJECT_STATE = select(
    projects.c.id,
    projects.c.name,
    projects.c.display_name,
    projects.c.serial,
    projects.c.hosted,
).where(projects.c.name == bindparam("name"))


def project_state(conn: Connection, name: str) -> ProjectState | None:
    row = conn.execute(PROJECT_STATE, {"name": name}).first()
    return ProjectState(*row) if row else None


def ensure_project(
    conn: Connection, name: str, display_name: str, serial: int, hosted: bool
) -> int:
    """The project's id, created if new; stamps it with ``serial``.

    ``hosted`` marks a project uploaded here: from then on it is never merged with an
    upstream's files (the dependency-confusion guard).
    """
    existing = project_state(conn, name)
    if existing:
        values: dict[str, object] = {"serial": serial}
        if hosted and not existing.hosted:
            values["hosted"] = True
        conn.execute(update(projects).where(projects.c.id == existing.id).values(**values))
        return existing.id
    return conn.execute(
        insert(projects)
        .values(
            name=name,
            display_name=display_name,
            serial=serial,
            created_at=datetime.now(UTC),
            hosted=hosted,
        )
        .returning(projects.c.id)
    ).scalar_one()


def touch_project(conn: Connection, project_id: int, serial: int) -> None:
    conn.execute(update(projects).where(projects.c.id == project_id).values(serial=serial))


def _visible(platform: str):  # type: ignore[no-untyped-def]
    return files.c.platform.in_((ALL_PLATFORMS, platform))


def files_for_platform(conn: Connection, project_id: int, platform: str) -> list[FileRecord]:
    """The files a platform's page lists: hosted for all, plus the platform's own."""
    rows = conn.execute(
        select(*_FILE_COLUMNS)
        .join(projects, projects.c.id == files.c.project_id)
        .where(files.c.project_id == project_id, _visible(platform))
        .order_by(files.c.filename)
    )
    return [_file(r) for r in rows]


def visible_projects(conn: Connection, platform: str) -> list[str]:
    """Display names of projects with at least one file on a platform's index."""
    rows = conn.execute(
        select(projects.c.display_name)
        .where(
            select(files.c.id)
            .where(files.c.project_id == projects.c.id, _visible(platform))
            .exists()
        )
        .order_by(projects.c.name)
    )
    return [r[0] for r in rows]


def wheel_exists(conn: Connection, project: str, version: str, platform: str) -> bool:
    """Whether the platform's index has a wheel of this project version (built or uploaded)."""
    found = conn.execute(
        select(files.c.id)
        .join(projects, projects.c.id == files.c.project_id)
        .where(
            projects.c.name == project,
            files.c.version == version,
            files.c.packagetype == "bdist_wheel",
            _visible(platform),
        )
        .limit(1)
    ).first()
    return found is not None


def job_exists(conn: Connection, project: str, version: str, platform: str) -> bool:
    found = conn.execute(
        select(build_jobs.c.id).where(
            build_jobs.c.project == project,
            build_jobs.c.version == version,
            build_jobs.c.platform == platform,
        )
    ).first()
    return found is not None


@dataclass(frozen=True)
class ServedFile:
    """What serving a stored file needs to know of it."""

    project: str
    version: str
    filename: str
    packagetype: str
    sha256: str
    metadata_sha256: str | None


SERVED_FILE = (
    select(
        projects.c.name,
        files.c.version,
        files.c.filename,
        files.c.packagetype,
        files.c.sha256,
        files.c.metadata_sha256,
    )
    .join(projects, projects.c.id == files.c.project_id)
    .where(files.c.sha256 == bindparam("sha256"), files.c.filename == bindparam("filename"))
    .limit(1)
)


def find_file(conn: Connection, platform: str, filename: str) -> FileRecord | None:
    row = conn.execute(
        select(*_FILE_COLUMNS)
        .join(projects, projects.c.id == files.c.project_id)
        .where(files.c.platform == platform, files.c.filename == filename)
    ).first()
    return _file(row) if row else None


def find_distribution(conn: Connection, platform: str, dist_key: str) -> FileRecord | None:
    """The file pip would take for this distribution (any spelling of its filename)."""
    row = conn.execute(
        select(*_FILE_COLUMNS)
        .join(projects, projects.c.id == files.c.project_id)
        .where(files.c.platform == platform, files.c.dist_key == dist_key)
    ).first()
    return _file(row) if row else None


def tombstone_conflict(conn: Connection, platform: str, dist_key: str, sha256: str) -> str | None:
    """The filename of a deleted file of this distribution with other bytes, if any."""
    row = conn.execute(
        select(file_tombstones.c.filename).where(
            file_tombstones.c.platform == platform,
            file_tombstones.c.dist_key == dist_key,
            file_tombstones.c.sha256 != sha256,
        )
    ).first()
    return row[0] if row else None


def add_tombstone(conn: Connection, file_id: int, actor: str) -> None:
    row = conn.execute(
        select(files.c.platform, files.c.dist_key, files.c.filename, files.c.sha256).where(
            files.c.id == file_id
        )
    ).one()
    conn.execute(
        insert(file_tombstones).values(
            platform=row.platform,
            dist_key=row.dist_key or row.filename,
            filename=row.filename,
            sha256=row.sha256,
            deleted_at=datetime.now(UTC),
            deleted_by=actor[:200],
        )
    )


def get_file(conn: Connection, file_id: int) -> FileRecord | None:
    row = conn.execute(
        select(*_FILE_COLUMNS)
        .join(projects, projects.c.id == files.c.project_id)
        .where(files.c.id == file_id)
    ).first()
    return _file(row) if row else None


def list_project_files(conn: Connection, name: str) -> list[FileRecord]:
    rows = conn.execute(
        select(*_FILE_COLUMNS)
        .join(projects, projects.c.id == files.c.project_id)
        .where(projects.c.name == name)
        .order_by(files.c.filename, files.c.platform)
    )
    return [_file(r) for r in rows]


def list_projects(conn: Connection) -> list[dict[str, object]]:
    rows = conn.execute(
        select(projects.c.name, projects.c.display_name, func.count(files.c.id))
        .select_from(projects.outerjoin(files, files.c.project_id == projects.c.id))
        .group_by(projects.c.id)
        .order_by(projects.c.name)
    )
    return [{"name": r[0], "display_name": r[1], "files": r[2]} for r in rows]


def add_file(conn: Connection, project_id: int, **values: object) -> int:
    return conn.execute(
        insert(files).values(project_id=project_id, **values).returning(files.c.id)
    ).scalar_one()


def set_yanked(conn: Connection, file_id: int, yanked: bool, reason: str | None) -> None:
    conn.execute(
        update(files)
        .where(files.c.id == file_id)
        .values(yanked=yanked, yanked_reason=reason if yanked else None)
    )


def delete_file_row(conn: Connection, file_id: int) -> None:
    conn.execute(delete(files).where(files.c.id == file_id))


def digest_in_use(conn: Connection, sha256: str) -> bool:
    """Whether any file (or file's metadata) still refers to this blob."""
    found = conn.execute(
        select(files.c.id)
        .where((files.c.sha256 == sha256) | (files.c.metadata_sha256 == sha256))
        .limit(1)
    ).first()
    return found is not None


def record_event(
    conn: Connection,
    actor: str,
    action: str,
    project: str | None = None,
    filename: str | None = None,
    detail: str | None = None,
) -> None:
    """Add an audit event in the caller's transaction: it is kept only if the write is."""
    who = audit.current()
    conn.execute(
        insert(audit_events).values(
            at=datetime.now(UTC),
            actor=actor[:200],
            token_id=who.token_id,
            owner=who.owner,
            address=who.address,
            action=action[:50],
            project=project,
            filename=filename,
            detail=detail,
        )
    )


def list_events(
    conn: Connection, limit: int = 100, where: EventFilter | None = None
) -> list[dict[str, object]]:
    """Newest first; page on with ``before`` = the last id seen."""
    query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
    f = where or EventFilter()
    if f.action:
        if f.action.endswith("*"):
            query = query.where(audit_events.c.action.startswith(f.action[:-1], autoescape=True))
        else:
            query = query.where(audit_events.c.action == f.action)
    for column, value in (
        (audit_events.c.project, f.project),
        (audit_events.c.actor, f.actor),
        (audit_events.c.owner, f.owner),
        (audit_events.c.token_id, f.token_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if f.before is not None:
        query = query.where(audit_events.c.id < f.before)
    if f.since is not None:
        query = query.where(audit_events.c.at >= f.since)
    if f.until is not None:
        query = query.where(audit_events.c.at <= f.until)
    rows = conn.execute(query).mappings()
    return [{**r, "at": r["at"].replace(tzinfo=r["at"].tzinfo or UTC).isoformat()} for r in rows]


def events_page(
    conn: Connection, limit: int, where: EventFilter
) -> tuple[list[dict[str, object]], int | None]:
    """A page of :func:`list_events` and the ``before`` of the next (None on the last)."""
    found = list_events(conn, limit + 1, where)
    following = found[limit - 1]["id"] if len(found) > limit else None
    return found[:limit], following  # type: ignore[return-value]
