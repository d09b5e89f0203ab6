"""Build on first sight: an sdist served on a platform with no wheel for it queues a build.

Anonymous downloads may queue jobs (pip needs first-sight builds), so the number is bounded:
one job per (project, version, platform) ever, only for sdists this index lists (hosted or
announced by an upstream, never an invented name), and at most
``first_sight_per_hour`` new first-sight jobs per platform in any hour. Past that the sdist
is still served; a later download, once the hour has room, queues the job.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, select

from index_server import jobs, repository
from index_server.db.engine import read_connection
from index_server.db.schema import build_jobs
from index_server.services import Services
from platforms import Platform


def note_sdist_served(services: Services, platform: Platform, project: str, version: str) -> bool:
    """Queue a build of this version for the platform, once; True if a job was queued."""
    if not platform.builds_on_first_sight:
        return False
    with read_connection(services.engine) as conn:
        if repository.wheel_exists(conn, project, version, platform.name):
            return False
        if repository.job_exists(conn, project, version, platform.name):
            return False
        if _recent_first_sight(conn, platform.name) >= services.settings.first_sight_per_hour:
            log.warning(
                "first-sight build of %s %s for %s not queued: %d in the last hour",
                project,
                version,
                platform.name,
                services.settings.first_sight_per_hour,
            )
            return False
    outcome = jobs.request_build(services, project, version, platform.name, "first-sight", "index")
    return outcome.outcome == "queued"


log = logging.getLogger("wheelfarm.builds")


def _recent_first_sight(conn: Connection, platform: str) -> int:
    since = datetime.now(UTC) - timedelta(hours=1)
    return conn.execute(
        select(func.count()).where(
            build_jobs.c.platform == platform,
            build_jobs.c.source == "first-sight",
            build_jobs.c.requested_at >= since,
        )
    ).scalar_one()
