"""The build queue: jobs for (project, version, platform), claimed by workers under leases.

The queue is a query over ``build_jobs``, not a list kept by hand. State changes:

    queued -> running            a worker claims it (atomically, with a fresh lease)
    running -> succeeded|failed  the worker finishes it, presenting its lease
    running -> queued            the lease expired (worker died) or a transient failure
                                 with attempts left; ``not_before`` sets the backoff
    queued|running -> cancelled  an admin cancels it
    any -> queued                an admin asks for a rebuild
    (new) -> skipped             the project or version is on the skip list
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from builder.protocol import JOB_KINDS, TRANSIENT_CATEGORIES
from index_server import repository
from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import (
    build_jobs,
    build_settings,
    resolution_inputs,
    skip_list,
    workers,
)
from index_server.services import Services

MAX_ATTEMPTS = 3
BACKOFF_SECONDS = (15, 60, 300)
ACTIVE_STATES = ("queued", "running")
STATES = ("queued", "running", "succeeded", "failed", "skipped", "cancelled")


class JobError(Exception):
    """A job action that cannot be done; the text says why."""


class LeaseLost(JobError):
    """The presented lease is not the job's current one: the result is refused."""


class JobNotFound(JobError, LookupError):
    pass


@dataclass(frozen=True)
class RequestOutcome:
    project: str
    version: str
    platform: str
    outcome: str  # queued | exists | has_wheel | skipped
    job_id: int | None
    state: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo:
        return value
    return value.replace(tzinfo=UTC)


def _insert(conn: Connection):  # type: ignore[no-untyped-def]
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def skip_reason(conn: Connection, project: str, version: str) -> str | None:
    row = conn.execute(
        select(skip_list.c.reason).where(
            skip_list.c.project == project, skip_list.c.version.in_(("", version))
        )
    ).first()
    return row[0] if row else None


def request_build(
    services: Services,
    project: str,
    version: str,
    platform: str,
    source: str,
    requested_by: str,
) -> RequestOutcome:
    """Queue a job unless it exists or the platform already has a wheel: never twice. The
    audit event is written in the job's own transaction (a batch: one event per job)."""
    with write_transaction(services.engine) as conn:
        existing = conn.execute(
            select(build_jobs.c.id, build_jobs.c.state).where(
                build_jobs.c.project == project,
                build_jobs.c.version == version,
                build_jobs.c.platform == platform,
            )
        ).first()
        if existing:
            return RequestOutcome(project, version, platform, "exists", *existing)
        if repository.wheel_exists(conn, project, version, platform):
            return RequestOutcome(project, version, platform, "has_wheel", None, None)
        reason = skip_reason(conn, project, version)
        state = "skipped" if reason else "queued"
        job_id = conn.execute(
            _insert(conn)(build_jobs)
            .values(
                project=project,
                version=version,
                platform=platform,
                state=state,
                source=source,
                requested_by=requested_by,
                requested_at=_now(),
                attempts=0,
                reason=reason,
                log="",
            )
            .on_conflict_do_nothing()
            .returning(build_jobs.c.id)
        ).scalar()
        if job_id is not None and source != "first-sight":  # first sight: no one asked
            repository.record_event(
                conn, requested_by, f"build {source}", project, None, f"{version} {platform}"
            )
    if job_id is None:  # a concurrent request won the race
        return RequestOutcome(project, version, platform, "exists", None, None)
    return RequestOutcome(
        project, version, platform, "skipped" if reason else "queued", job_id, state
    )


def requeue_expired(conn: Connection, now: datetime) -> int:
    """Jobs whose worker stopped heartbeating go back to the queue (or fail, if worn out)."""
    expired = and_(build_jobs.c.state == "running", build_jobs.c.lease_expires_at < now)
    failed = conn.execute(
        update(build_jobs)
        .where(expired, build_jobs.c.attempts >= MAX_ATTEMPTS)
        .values(
            state="failed",
            lease=None,
            finished_at=now,
            error_category="lost_worker",
            error_summary="the worker stopped answering on every attempt",
        )
    ).rowcount
    requeued = conn.execute(
        update(build_jobs)
        .where(expired)
        .values(state="queued", lease=None, worker=None, not_before=now)
    ).rowcount
    return failed + requeued


def claim(
    services: Services,
    worker: str,
    platforms: list[str],
    runner: str = "podman",
    kinds: tuple[str, ...] | list[str] = JOB_KINDS,
) -> dict[str, Any] | None:
    """Give the oldest ready job of these platforms (and kinds) to this worker, or None."""
    now = _now()
    lease = secrets.token_urlsafe(24)
    with write_transaction(services.engine) as conn:
        requeue_expired(conn, now)
        candidate = (
            select(build_jobs.c.id)
            .where(
                build_jobs.c.state == "queued",
                build_jobs.c.platform.in_(platforms),
                build_jobs.c.kind.in_(list(kinds)),
                or_(build_jobs.c.not_before.is_(None), build_jobs.c.not_before <= now),
            )
            .order_by(build_jobs.c.id)
            .limit(1)
        )
        if conn.dialect.name == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        job_id = conn.execute(candidate).scalar()
        if job_id is not None:
            platform = conn.execute(
                select(build_jobs.c.platform).where(build_jobs.c.id == job_id)
            ).scalar_one()
            lease_seconds = lease_seconds_for(services, platform)
            claimed = conn.execute(
                update(build_jobs)
                .where(build_jobs.c.id == job_id, build_jobs.c.state == "queued")
                .values(
                    state="running",
                    worker=worker,
                    lease=lease,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=build_jobs.c.attempts + 1,
                    started_at=now,
                    finished_at=None,
                    error_category=None,
                    error_summary=None,
                )
            ).rowcount
            if claimed != 1:
                job_id = None
        _seen(conn, worker, platforms, runner, job_id, now)
        if job_id is None:
            return None
        row = conn.execute(select(build_jobs).where(build_jobs.c.id == job_id)).mappings().one()
        waited = (now - _aware(row["requested_at"])).total_seconds()  # type: ignore[operator]
        conn.execute(
            update(build_jobs).where(build_jobs.c.id == job_id).values(waited_seconds=waited)
        )
        extra: dict[str, Any] = {}
        if row["kind"] == "resolve":
            settings = merged_settings(conn)
            inputs = (
                conn.execute(select(resolution_inputs).where(resolution_inputs.c.job_id == job_id))
                .mappings()
                .one()
            )
            extra = {
                "kind": "resolve",
                "requirements": inputs["requirements"],
                "constraints": inputs["constraints"],
                "timeout": resolution_timeout(services, row["platform"]),
            }
        else:
            settings = project_settings(conn, row["project"])
    return {
        **extra,
        "id": row["id"],
        "project": row["project"],
        "version": row["version"],
        "platform": row["platform"],
        "lease": lease,
        "lease_seconds": lease_seconds,
        "index_path": f"/{row['platform']}/simple/",
        "attempt": row["attempts"],
        "settings": settings,
    }


def resolution_timeout(services: Services, platform: str) -> float:
    """A resolution's time limit: the server's setting, stretched for an emulated platform."""
    known = services.platforms.get(platform)
    factor = known.slowdown if known else 1.0
    return float(services.settings.resolution_timeout) * factor


def merged_settings(conn: Connection) -> dict[str, Any]:
    """Every project's build settings as one, for a resolution: pip prepares the metadata
    of whichever sdists the closure holds, in build environments it cannot tell apart, so
    the build constraints of all projects go in one PIP_BUILD_CONSTRAINT file and their OS
    packages in one image. ``env`` is left out: it belongs to one project's build."""
    constraints: list[str] = []
    packages: set[str] = set()
    rows = conn.execute(
        select(build_settings.c.project, build_settings.c.settings).order_by(
            build_settings.c.project
        )
    )
    for project, text in rows:
        settings = json.loads(text)
        if settings.get("constraints", "").strip():
            constraints.append(f"# {project}\n{settings['constraints'].strip()}\n")
        packages.update(settings.get("os_packages", ()))
    merged: dict[str, Any] = {}
    if constraints:
        merged["constraints"] = "".join(constraints)
    if packages:
        merged["os_packages"] = sorted(packages)
    return merged


def lease_seconds_for(services: Services, platform: str) -> int:
    """The lease of a job on this platform: an emulated one's steps take longer between
    the worker's chances to heartbeat, so its lease is stretched by the platform's slowdown."""
    known = services.platforms.get(platform)
    factor = known.slowdown if known else 1.0
    return round(services.settings.build_lease_seconds * factor)


def _seen(
    conn: Connection,
    worker: str,
    platforms: list[str],
    runner: str,
    job_id: int | None,
    now: datetime,
) -> None:
    values = {
        "platforms": json.dumps(platforms),
        "runner": runner,
        "last_seen": now,
        "current_job": job_id,
    }
    conn.execute(
        _insert(conn)(workers)
        .values(name=worker, first_seen=now, **values)
        .on_conflict_do_update(index_elements=[workers.c.name], set_=values)
    )


def _leased(conn: Connection, job_id: int, lease: str) -> dict[str, Any]:
    row = conn.execute(select(build_jobs).where(build_jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise JobNotFound(f"no build job {job_id}")
    expires = _aware(row["lease_expires_at"])
    if (
        row["state"] != "running"
        or not row["lease"]
        or not secrets.compare_digest(row["lease"].encode(), lease.encode())
        or (expires is not None and expires < _now())
    ):
        raise LeaseLost(f"job {job_id}: this lease is no longer valid (state {row['state']})")
    return dict(row)


def check_lease(services: Services, job_id: int, lease: str) -> dict[str, Any]:
    with read_connection(services.engine) as conn:
        return _leased(conn, job_id, lease)


def heartbeat(services: Services, job_id: int, lease: str) -> bool:
    """Renew the lease; True if the job was cancelled meanwhile (the worker should stop)."""
    now = _now()
    with write_transaction(services.engine) as conn:
        row = conn.execute(
            select(build_jobs.c.state, build_jobs.c.lease, build_jobs.c.worker).where(
                build_jobs.c.id == job_id
            )
        ).first()
        if (
            row
            and row.state == "cancelled"
            and row.lease
            and secrets.compare_digest(row.lease.encode(), lease.encode())
        ):
            return True
        job = _leased(conn, job_id, lease)
        seconds = lease_seconds_for(services, job["platform"])
        conn.execute(
            update(build_jobs)
            .where(build_jobs.c.id == job_id)
            .values(lease_expires_at=now + timedelta(seconds=seconds))
        )
        conn.execute(
            update(workers)
            .where(workers.c.name == job["worker"])
            .values(last_seen=now, current_job=job_id)
        )
    return False


def append_log(services: Services, job_id: int, lease: str, text: str) -> None:
    with write_transaction(services.engine) as conn:
        _leased(conn, job_id, lease)
        conn.execute(
            update(build_jobs).where(build_jobs.c.id == job_id).values(log=build_jobs.c.log + text)
        )


def finish(services: Services, job_id: int, report: dict[str, Any]) -> dict[str, Any]:
    """Record a worker's outcome; transient failures go back to the queue with backoff."""
    now = _now()
    with write_transaction(services.engine) as conn:
        job = _leased(conn, job_id, report["lease"])
        succeeded = report["outcome"] == "succeeded"
        category = None if succeeded else (report.get("error_category") or "other")
        retry = (
            not succeeded and category in TRANSIENT_CATEGORIES and job["attempts"] < MAX_ATTEMPTS
        )
        result: dict[str, Any] = {
            "wheels": report.get("wheels", []),
            "shared_libraries": report.get("shared_libraries", []),
            "os_packages": report.get("os_packages", []),
            "os_packages_closure": report.get("os_packages_closure", []),
            "compiled": report.get("compiled"),
        }
        if job["kind"] == "resolve":
            result = {"closure": report.get("closure", [])} if succeeded else {}
        values: dict[str, Any] = {
            "lease": None,
            "image_id": report.get("image_id"),
            "platform_image_id": report.get("platform_image_id"),
            "build_seconds": report.get("build_seconds"),
            "error_category": category,
            "error_summary": report.get("error_summary"),
            "result": json.dumps(result),
        }
        if retry:
            delay = BACKOFF_SECONDS[min(job["attempts"], len(BACKOFF_SECONDS)) - 1]
            values.update(state="queued", worker=None, not_before=now + timedelta(seconds=delay))
        else:
            values.update(state="succeeded" if succeeded else "failed", finished_at=now)
        conn.execute(update(build_jobs).where(build_jobs.c.id == job_id).values(**values))
        conn.execute(
            update(workers)
            .where(workers.c.name == job["worker"])
            .values(last_seen=now, current_job=None)
        )
        row = conn.execute(select(build_jobs).where(build_jobs.c.id == job_id)).mappings().one()
    return job_json(row)


def row_json(row: Any, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A database row as JSON-ready values (times in ISO 8601 with their zone)."""
    return {
        key: (_aware(value).isoformat() if isinstance(value, datetime) else value)  # type: ignore[union-attr]
        for key, value in dict(row).items()
        if key not in leave_out
    }


def job_json(row: Any, with_log: bool = False) -> dict[str, Any]:
    data = row_json(row, ("lease", "log", "result"))
    data["result"] = json.loads(row["result"]) if row["result"] else None
    if with_log:
        data["log"] = row["log"]
    return data


def get_job(services: Services, job_id: int, with_log: bool = True) -> dict[str, Any]:
    with read_connection(services.engine) as conn:
        row = conn.execute(select(build_jobs).where(build_jobs.c.id == job_id)).mappings().first()
    if row is None:
        raise JobNotFound(f"no build job {job_id}")
    return job_json(row, with_log=with_log)


def list_jobs(
    services: Services,
    state: str | None = None,
    platform: str | None = None,
    project: str | None = None,
    limit: int = 100,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    query = select(build_jobs).order_by(build_jobs.c.id.desc()).limit(limit)
    if kind:
        query = query.where(build_jobs.c.kind == kind)
    if state:
        query = query.where(build_jobs.c.state == state)
    if platform:
        query = query.where(build_jobs.c.platform == platform)
    if project:
        query = query.where(build_jobs.c.project == project)
    with read_connection(services.engine) as conn:
        return [job_json(r) for r in conn.execute(query).mappings()]


def _admin_update(
    services: Services,
    job_id: int,
    allowed: tuple[str, ...],
    values: dict[str, Any],
    action: str,
    actor: str,
) -> dict[str, Any]:
    with write_transaction(services.engine) as conn:
        row = conn.execute(select(build_jobs).where(build_jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(f"no build job {job_id}")
        if row["state"] not in allowed:
            raise JobError(f"cannot {action} a {row['state']} job")
        conn.execute(update(build_jobs).where(build_jobs.c.id == job_id).values(**values))
        repository.record_event(
            conn,
            actor,
            f"build {action}",
            row["project"],
            None,
            f"job {job_id} {row['version']} {row['platform']}: {values.get('reason') or ''}",
        )
        row = conn.execute(select(build_jobs).where(build_jobs.c.id == job_id)).mappings().one()
    return job_json(row)


def cancel(services: Services, job_id: int, actor: str, reason: str | None = None) -> dict:
    return _admin_update(
        services,
        job_id,
        ACTIVE_STATES,
        {"state": "cancelled", "finished_at": _now(), "reason": reason or "cancelled"},
        "cancel",
        actor,
    )


def rebuild(services: Services, job_id: int, actor: str, source: str = "rebuild") -> dict[str, Any]:
    return _admin_update(
        services,
        job_id,
        ("succeeded", "failed", "skipped", "cancelled"),
        {
            "state": "queued",
            "attempts": 0,
            "not_before": None,
            "lease": None,
            "worker": None,
            "reason": None,
            "error_category": None,
            "error_summary": None,
            "log": "",
            "requested_at": _now(),
            "source": source,
            "finished_at": None,
            # Nothing of the previous attempt may show on a queued job's page.
            "lease_expires_at": None,
            "started_at": None,
            "build_seconds": None,
            "waited_seconds": None,
            "image_id": None,
            "platform_image_id": None,
            "result": None,
        },
        "rebuild",
        actor,
    )


def skip_job(services: Services, job_id: int, actor: str, reason: str) -> dict[str, Any]:
    return _admin_update(
        services,
        job_id,
        ("queued", "failed", "cancelled"),
        {"state": "skipped", "reason": reason, "finished_at": _now()},
        "skip",
        actor,
    )


def add_skip(services: Services, project: str, version: str, reason: str, actor: str) -> None:
    """Put a project (version "") or a version on the skip list; queued jobs are skipped."""
    now = _now()
    with write_transaction(services.engine) as conn:
        values = {"reason": reason, "created_at": now, "created_by": actor}
        conn.execute(
            _insert(conn)(skip_list)
            .values(project=project, version=version, **values)
            .on_conflict_do_update(
                index_elements=[skip_list.c.project, skip_list.c.version], set_=values
            )
        )
        matching = build_jobs.c.project == project
        if version:
            matching = and_(matching, build_jobs.c.version == version)
        conn.execute(
            update(build_jobs)
            .where(matching, build_jobs.c.state == "queued")
            .values(state="skipped", reason=reason, finished_at=now)
        )
        repository.record_event(conn, actor, "skip", project, None, f"{version or '*'}: {reason}")


def remove_skip(services: Services, project: str, version: str, actor: str) -> bool:
    with write_transaction(services.engine) as conn:
        removed = conn.execute(
            delete(skip_list).where(skip_list.c.project == project, skip_list.c.version == version)
        ).rowcount
        if removed:
            repository.record_event(conn, actor, "unskip", project, None, version or "*")
    return removed > 0


def list_skips(services: Services) -> list[dict[str, Any]]:
    with read_connection(services.engine) as conn:
        rows = conn.execute(select(skip_list).order_by(skip_list.c.project)).mappings()
        return [row_json(r) for r in rows]


def project_settings(conn: Connection, project: str) -> dict[str, Any]:
    row = conn.execute(
        select(build_settings.c.settings).where(build_settings.c.project == project)
    ).first()
    return json.loads(row[0]) if row else {}


def set_project_settings(
    services: Services, project: str, settings: dict[str, Any], actor: str
) -> None:
    now = _now()
    values = {
        "settings": json.dumps(settings, sort_keys=True),
        "updated_at": now,
        "updated_by": actor,
    }
    with write_transaction(services.engine) as conn:
        conn.execute(
            _insert(conn)(build_settings)
            .values(project=project, **values)
            .on_conflict_do_update(index_elements=[build_settings.c.project], set_=values)
        )
        shown = json.dumps(write_only(settings), sort_keys=True)
        repository.record_event(conn, actor, "build settings", project, None, shown)


SECRET_SHOWN_AS = "(set)"


def write_only(settings: dict[str, Any]) -> dict[str, Any]:
    """Build settings as shown to people: ``env`` values (where secrets go) are never read
    back, only their names; the worker that builds gets them in its claim."""
    if not settings.get("env"):
        return settings
    return {**settings, "env": dict.fromkeys(settings["env"], SECRET_SHOWN_AS)}


def get_project_settings(services: Services, project: str) -> dict[str, Any]:
    with read_connection(services.engine) as conn:
        return project_settings(conn, project)


def list_workers(services: Services) -> list[dict[str, Any]]:
    with read_connection(services.engine) as conn:
        rows = conn.execute(select(workers).order_by(workers.c.name)).mappings()
        result = []
        for r in rows:
            item = row_json(r)
            item["platforms"] = json.loads(r["platforms"])
            last_seen = _aware(r["last_seen"])
            alive_for = timedelta(seconds=services.settings.build_lease_seconds * 2)
            item["alive"] = bool(last_seen and _now() - last_seen < alive_for)
            result.append(item)
        return result
