"""What the console pages show, as plain functions over the services (no Flask here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from packaging.version import InvalidVersion, Version
from sqlalchemy import func, select

from index_server import audit, jobs, owners, repository
from index_server.db.engine import read_connection
from index_server.db.schema import build_jobs, files, projects, skip_list
from index_server.repository import FileRecord
from index_server.services import Services

FINISHED = ("succeeded", "failed")
HOURS_SHOWN = 24


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class QueueRow:
    platform: str
    queued: int
    running: int
    oldest_queued: datetime | None
    configured: bool
    emulated: bool = False  # built under qemu-user: several times slower
    retired: bool = False


def queue_by_platform(services: Services) -> list[QueueRow]:
    """Queued and running jobs per platform: every configured platform, then any other."""
    counts: dict[str, dict[str, int]] = {p: {} for p in sorted(services.platforms)}
    oldest: dict[str, datetime | None] = {}
    with read_connection(services.engine) as conn:
        rows = conn.execute(
            select(
                build_jobs.c.platform,
                build_jobs.c.state,
                func.count(),
                func.min(build_jobs.c.requested_at),
            )
            .where(build_jobs.c.state.in_(jobs.ACTIVE_STATES))
            .group_by(build_jobs.c.platform, build_jobs.c.state)
        )
        for platform, state, count, first in rows:
            counts.setdefault(platform, {})[state] = count
            if state == "queued":
                oldest[platform] = _aware(first)
    return [
        QueueRow(
            platform,
            by_state.get("queued", 0),
            by_state.get("running", 0),
            oldest.get(platform),
            platform in services.platforms,
            platform in services.platforms and services.platforms[platform].emulated,
            platform in services.platforms and services.platforms[platform].retired,
        )
        for platform, by_state in counts.items()
    ]


@dataclass(frozen=True)
class Throughput:
    last_hour: dict[str, int]  # outcome -> count
    last_day: dict[str, int]
    hourly: list[tuple[datetime, int, int]]  # (hour start, succeeded, failed), oldest first

    @property
    def per_hour_day_average(self) -> float:
        return sum(self.last_day.values()) / HOURS_SHOWN

    @property
    def busiest_hour(self) -> int:
        return max((s + f for _, s, f in self.hourly), default=0)


def throughput(services: Services, now: datetime | None = None) -> Throughput:
    """Builds finished in the last hour and the last 24 hours, with an hourly breakdown."""
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=HOURS_SHOWN)
    with read_connection(services.engine) as conn:
        rows = conn.execute(
            select(build_jobs.c.state, build_jobs.c.finished_at).where(
                build_jobs.c.state.in_(FINISHED), build_jobs.c.finished_at >= since
            )
        ).all()
    last_hour = dict.fromkeys(FINISHED, 0)
    last_day = dict.fromkeys(FINISHED, 0)
    first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS_SHOWN - 1)
    buckets = [[first_hour + timedelta(hours=i), 0, 0] for i in range(HOURS_SHOWN)]
    for state, finished_at in rows:
        when = _aware(finished_at)
        assert when is not None
        last_day[state] += 1
        if when >= now - timedelta(hours=1):
            last_hour[state] += 1
        index = int((when - first_hour).total_seconds() // 3600)
        if 0 <= index < HOURS_SHOWN:
            buckets[index][1 if state == "succeeded" else 2] += 1
    return Throughput(last_hour, last_day, [(b[0], b[1], b[2]) for b in buckets])  # type: ignore[misc]


def recent_jobs(services: Services, state: str | None = None, limit: int = 20) -> list[dict]:  # type: ignore[type-arg]
    """The latest jobs (of a state), most recently finished or requested first."""
    order = func.coalesce(build_jobs.c.finished_at, build_jobs.c.requested_at).desc()
    query = select(build_jobs).order_by(order, build_jobs.c.id.desc()).limit(limit)
    if state:
        query = query.where(build_jobs.c.state == state)
    with read_connection(services.engine) as conn:
        return [jobs.job_json(r) for r in conn.execute(query).mappings()]


@dataclass(frozen=True)
class ProjectHit:
    name: str
    display_name: str
    files: int
    jobs: int


def search_projects(
    services: Services, query: str, limit: int = 100
) -> tuple[list[ProjectHit], bool]:
    """Projects whose canonical name contains the query: exact, then prefix, then the rest.

    Projects known only from build jobs (upstream projects being built) are found too.
    Returns the hits and whether there were more than ``limit``.
    """
    needle = canonical_query(query)
    with read_connection(services.engine) as conn:
        file_counts = (
            select(projects.c.name, projects.c.display_name, func.count(files.c.id))
            .select_from(projects.outerjoin(files, files.c.project_id == projects.c.id))
            .group_by(projects.c.id)
        )
        job_counts = (
            select(build_jobs.c.project, func.count())
            .where(build_jobs.c.kind == "build")
            .group_by(build_jobs.c.project)
        )
        if needle:
            file_counts = file_counts.where(projects.c.name.contains(needle, autoescape=True))
            job_counts = job_counts.where(build_jobs.c.project.contains(needle, autoescape=True))
        found: dict[str, list[Any]] = {
            name: [display, count, 0] for name, display, count in conn.execute(file_counts)
        }
        for name, count in conn.execute(job_counts):
            found.setdefault(name, [name, 0, 0])[2] = count

    def rank(name: str) -> tuple[int, str]:
        return (0 if name == needle else 1 if name.startswith(needle) else 2, name)

    names = sorted(found, key=rank)
    hits = [ProjectHit(n, *found[n]) for n in names[:limit]]
    return hits, len(names) > limit


def canonical_query(query: str) -> str:
    """A search text in the form of canonical names (lower case, runs of -_. as one -)."""
    from packaging.utils import canonicalize_name

    return canonicalize_name(query.strip()) if query.strip() else ""


@dataclass
class Cell:
    wheels: list[FileRecord] = field(default_factory=list)
    job: dict[str, Any] | None = None

    @property
    def os_packages(self) -> list[str]:
        result = (self.job or {}).get("result") or {}
        return list(result.get("os_packages") or [])

    @property
    def without_compiled_code(self) -> bool:
        """The build made a platform wheel with no ELF file (its C extension fell back)."""
        return ((self.job or {}).get("result") or {}).get("compiled") is False

    @property
    def empty(self) -> bool:
        return not self.wheels and self.job is None


@dataclass
class VersionRow:
    version: str
    hosted: list[FileRecord]  # sdists and pure wheels, for every platform
    cells: dict[str, Cell]


@dataclass
class ProjectMatrix:
    name: str
    display_name: str
    platforms: list[str]
    rows: list[VersionRow]
    settings: dict[str, Any]
    skips: list[dict[str, Any]]
    owners: list[dict[str, object]] = field(default_factory=list)


def _version_key(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def _normal(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def project_matrix(services: Services, name: str) -> ProjectMatrix | None:
    """Versions (newest first, by PEP 440) by platforms: wheels and builds; None if unknown."""
    with read_connection(services.engine) as conn:
        state = repository.project_state(conn, name)
        records = repository.list_project_files(conn, name)
        settings = jobs.write_only(jobs.project_settings(conn, name))
        skips = [
            dict(r)
            for r in conn.execute(
                select(skip_list.c.version, skip_list.c.reason).where(skip_list.c.project == name)
            ).mappings()
        ]
    project_jobs = jobs.list_jobs(services, project=name, limit=100_000)
    owned_by = owners.list_owners(services, name)
    if state is None and not project_jobs and not owned_by:
        return None
    platforms = sorted(services.platforms)
    extra = {r.platform for r in records if r.platform} | {j["platform"] for j in project_jobs}
    platforms += sorted(extra - set(platforms))
    rows: dict[str, VersionRow] = {}

    def row(version: str) -> VersionRow:
        key = _normal(version)
        if key not in rows:
            rows[key] = VersionRow(key, [], {p: Cell() for p in platforms})
        return rows[key]

    for record in records:
        if record.platform:
            row(record.version).cells[record.platform].wheels.append(record)
        else:
            row(record.version).hosted.append(record)
    for job in project_jobs:
        row(job["version"]).cells[job["platform"]].job = job
    ordered = sorted(rows.values(), key=lambda r: _version_key(r.version), reverse=True)
    return ProjectMatrix(
        name=name,
        display_name=state.display_name if state else name,
        platforms=platforms,
        rows=ordered,
        settings=settings,
        skips=skips,
        owners=owned_by,
    )


@dataclass
class BuildPage:
    job: dict[str, Any]
    settings: dict[str, Any]
    wheels: list[tuple[str, FileRecord | None]]  # filename, and its file if it is in the index
    log_offset: int


def build_page(services: Services, job_id: int) -> BuildPage:
    """A job with its log, its project's build settings and the wheels it made."""
    job = jobs.get_job(services, job_id, with_log=True)
    result = job.get("result") or {}
    with read_connection(services.engine) as conn:
        if job.get("kind") == "resolve":
            settings = jobs.merged_settings(conn)
        else:
            settings = jobs.write_only(jobs.project_settings(conn, job["project"]))
        wheels = [
            (filename, repository.find_file(conn, job["platform"], filename))
            for filename in result.get("wheels") or []
        ]
    return BuildPage(job, settings, wheels, len(job["log"]))


def log_since(services: Services, job_id: int, offset: int) -> dict[str, Any] | None:
    """The log text after ``offset`` characters, and the job's state; for live log polling.

    If the log is now shorter than the offset (a rebuild started it afresh), the whole log
    comes back with ``reset`` set.
    """
    offset = max(0, offset)
    with read_connection(services.engine) as conn:
        row = conn.execute(
            select(build_jobs.c.state, func.length(build_jobs.c.log)).where(
                build_jobs.c.id == job_id
            )
        ).first()
        if row is None:
            return None
        state, length = row[0], int(row[1] or 0)
        reset = length < offset
        start = 0 if reset else offset
        text = conn.execute(
            select(func.substr(build_jobs.c.log, start + 1)).where(build_jobs.c.id == job_id)
        ).scalar_one()
    text = text or ""
    return {
        "state": state,
        "text": text,
        "offset": start + len(text),
        "reset": reset,
        "done": state not in jobs.ACTIVE_STATES,
    }


AUDIT_PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditPage:
    events: list[dict[str, object]]
    next_before: int | None  # the ``before`` of the next (older) page; None on the last


def audit_page(
    services: Services, where: audit.EventFilter, limit: int = AUDIT_PAGE_SIZE
) -> AuditPage:
    """A page of the audit log, newest first: the API's query (``repository.events_page``)."""
    with read_connection(services.engine) as conn:
        found, following = repository.events_page(conn, limit, where)
    return AuditPage(found, following)
