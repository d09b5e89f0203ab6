"""Build on first sight: an sdist served on a platform with no wheel for it queues a build."""

from __future__ import annotations

from index_server import jobs, repository
from index_server.db.engine import read_connection
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
    outcome = jobs.request_build(services, project, version, platform.name, "first-sight", "index")
    return outcome.outcome == "queued"
