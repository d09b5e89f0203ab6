"""A platform's life after its TOML appears: backfill, image changes, retirement.

- **Backfill**: a new platform gets a build job for every (project, version) that has a
  platform wheel on another platform, most downloaded projects (last 30 days) first.
- **Image changes**: workers report the platform's build image id with every result; a
  new id becomes the platform's current image, and the wheels built on an older one are
  *stale*. They are rebuilt on request, or at once when ``rebuild_on_image_change`` is set.
  A rebuilt wheel replaces the stale one of the same name (see views/worker_api.py).
- **Retirement** (``retired = true`` in the TOML): no new builds; its index and files stay
  readable until an admin deletes the platform's files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from index_server import admin, jobs
from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import (
    ALL_PLATFORMS,
    build_jobs,
    files,
    platform_states,
    projects,
)
from index_server.download_counts import recent_downloads
from index_server.services import Services

BACKFILL_SOURCE = "backfill"
IMAGE_REBUILD_SOURCE = "image-rebuild"


class PlatformActionError(Exception):
    """A lifecycle action that cannot be done; the text says why."""


def _now() -> datetime:
    return datetime.now(UTC)


def _insert(conn: Connection):  # type: ignore[no-untyped-def]
    return jobs._insert(conn)


def _state_row(conn: Connection, platform: str) -> Any:
    return conn.execute(
        select(platform_states).where(platform_states.c.platform == platform)
    ).first()


def _ensure_state(conn: Connection, platform: str, now: datetime) -> None:
    conn.execute(
        _insert(conn)(platform_states)
        .values(platform=platform, first_seen=now)
        .on_conflict_do_nothing()
    )


# ---------------------------------------------------------------------------------------
# Backfill


def backfill_candidates(conn: Connection, platform: str) -> list[tuple[str, str]]:
    """(project, version) with a platform wheel elsewhere and none here, most downloaded
    projects first (then by name, newest version first)."""
    elsewhere = conn.execute(
        select(projects.c.name, files.c.version)
        .join(projects, projects.c.id == files.c.project_id)
        .where(
            files.c.packagetype == "bdist_wheel",
            files.c.platform.not_in((ALL_PLATFORMS, platform)),
        )
        .distinct()
    ).all()
    here = set(
        conn.execute(
            select(projects.c.name, files.c.version)
            .join(projects, projects.c.id == files.c.project_id)
            .where(files.c.packagetype == "bdist_wheel", files.c.platform == platform)
        ).all()
    )
    downloads = recent_downloads(conn)
    from packaging.version import InvalidVersion, Version

    def newest_first(version: str) -> Any:
        try:
            return (0, Version(version))
        except InvalidVersion:
            return (1, version)

    wanted = sorted({(p, v) for p, v in elsewhere if (p, v) not in here})
    wanted.sort(key=lambda pv: newest_first(pv[1]), reverse=True)
    wanted.sort(key=lambda pv: (-downloads.get(pv[0], 0), pv[0]))
    return wanted


def backfill(services: Services, platform: str, actor: str) -> dict[str, Any]:
    """Queue the platform's backfill; returns what was queued, in order, and the progress."""
    known = services.platforms.get(platform)
    if known is None:
        raise PlatformActionError(f"unknown platform {platform!r}")
    if known.retired:
        raise PlatformActionError(f"platform {platform} is retired: it builds nothing new")
    with read_connection(services.engine) as conn:
        candidates = backfill_candidates(conn, platform)
    queued = []
    for project, version in candidates:
        outcome = jobs.request_build(services, project, version, platform, BACKFILL_SOURCE, actor)
        if outcome.outcome == "queued":
            queued.append({"project": project, "version": version, "job_id": outcome.job_id})
    with write_transaction(services.engine) as conn:
        now = _now()
        _ensure_state(conn, platform, now)
        conn.execute(
            update(platform_states)
            .where(platform_states.c.platform == platform)
            .values(backfilled_at=now)
        )
    return {
        "platform": platform,
        "queued": queued,
        "progress": backfill_progress(services, platform),
    }


def backfill_progress(services: Services, platform: str) -> dict[str, Any]:
    """How far the platform's backfill jobs are: counts by state, and done of total."""
    with read_connection(services.engine) as conn:
        rows = conn.execute(
            select(build_jobs.c.state, func.count())
            .where(build_jobs.c.platform == platform, build_jobs.c.source == BACKFILL_SOURCE)
            .group_by(build_jobs.c.state)
        ).all()
        state = _state_row(conn, platform)
    counts = {s: int(n) for s, n in rows}
    total = sum(counts.values())
    done = total - counts.get("queued", 0) - counts.get("running", 0)
    backfilled = state.backfilled_at if state is not None else None
    return {
        "platform": platform,
        "states": counts,
        "total": total,
        "done": done,
        "backfilled_at": jobs.row_json({"at": backfilled})["at"],
    }


# ---------------------------------------------------------------------------------------
# Build images


def note_image(services: Services, platform: str, image_id: str | None) -> bool:
    """A worker built on ``image_id``: a new one becomes current. True if it changed (and
    then, with ``rebuild_on_image_change``, the stale wheels are queued again)."""
    if not image_id:
        return False
    now = _now()
    with write_transaction(services.engine) as conn:
        _ensure_state(conn, platform, now)
        if _older_than_current(conn, platform, image_id):
            return False  # a worker not yet on the new image (a rollout): not a change
        changed = conn.execute(
            update(platform_states)
            .where(
                platform_states.c.platform == platform,
                or_(platform_states.c.image_id.is_(None), platform_states.c.image_id != image_id),
            )
            .values(image_id=image_id, image_seen_at=now)
        ).rowcount
    if changed and services.settings.rebuild_on_image_change:
        rebuild_stale(services, platform, "image change")
    return bool(changed)


def _older_than_current(conn: Connection, platform: str, image_id: str) -> bool:
    """Whether builds on ``image_id`` finished before the current image was first seen."""
    state = _state_row(conn, platform)
    if state is None or state.image_seen_at is None or state.image_id == image_id:
        return False
    earlier = conn.execute(
        select(build_jobs.c.id)
        .where(
            build_jobs.c.platform == platform,
            build_jobs.c.platform_image_id == image_id,
            build_jobs.c.finished_at < state.image_seen_at,
        )
        .limit(1)
    ).first()
    return earlier is not None


def current_image(conn: Connection, platform: str) -> str | None:
    row = _state_row(conn, platform)
    return row.image_id if row is not None else None


def _stale_condition(platform: str, image: str):  # type: ignore[no-untyped-def]
    return and_(
        build_jobs.c.platform == platform,
        build_jobs.c.kind == "build",
        build_jobs.c.state == "succeeded",
        or_(build_jobs.c.platform_image_id.is_(None), build_jobs.c.platform_image_id != image),
    )


def stale_builds(services: Services, platform: str) -> list[dict[str, Any]]:
    """Succeeded builds of the platform made on another image than its current one."""
    with read_connection(services.engine) as conn:
        image = current_image(conn, platform)
        if image is None:
            return []
        rows = conn.execute(
            select(build_jobs).where(_stale_condition(platform, image)).order_by(build_jobs.c.id)
        ).mappings()
        return [jobs.job_json(r) for r in rows]


def rebuild_stale(services: Services, platform: str, actor: str) -> list[int]:
    """Queue every stale build of the platform again; the ids of the jobs queued."""
    queued = []
    for job in stale_builds(services, platform):
        try:
            jobs.rebuild(services, job["id"], actor, source=IMAGE_REBUILD_SOURCE)
        except jobs.JobError:  # changed meanwhile (e.g. rebuilt by someone else)
            continue
        queued.append(int(job["id"]))
    return queued


def replaces_stale(job: dict[str, Any], earlier: Any) -> bool:
    """Whether a wheel uploaded by this job replaces ``earlier`` (same name): only for an
    image-change rebuild, and only a file from before the rebuild was queued."""
    requested = jobs._aware(job["requested_at"])
    uploaded = jobs._aware(earlier.uploaded_at)
    return bool(
        job["source"] == IMAGE_REBUILD_SOURCE and requested and uploaded and uploaded < requested
    )


def platform_status(services: Services, platform: str) -> dict[str, Any]:
    with read_connection(services.engine) as conn:
        state = _state_row(conn, platform)
        image = state.image_id if state is not None else None
        stale = (
            conn.execute(
                select(func.count())
                .select_from(build_jobs)
                .where(_stale_condition(platform, image))
            ).scalar_one()
            if image
            else 0
        )
        wheels = conn.execute(
            select(func.count())
            .select_from(files)
            .where(files.c.platform == platform, files.c.packagetype == "bdist_wheel")
        ).scalar_one()
    return {
        "image_id": image,
        "image_seen_at": jobs.row_json({"at": state.image_seen_at if state else None})["at"],
        "stale_wheels": int(stale),
        "wheels": int(wheels),
    }


# ---------------------------------------------------------------------------------------
# Retirement


def delete_platform_files(services: Services, platform: str, actor: str) -> list[str]:
    """Delete a retired (or no longer defined) platform's own files; their names."""
    known = services.platforms.get(platform)
    if not platform or (known is not None and not known.retired):
        raise PlatformActionError(
            f"platform {platform} is not retired: set retired = true in its TOML first"
        )
    with read_connection(services.engine) as conn:
        ids = [r[0] for r in conn.execute(select(files.c.id).where(files.c.platform == platform))]
    deleted = [admin.delete_file(services, i, actor).filename for i in ids]
    return deleted
