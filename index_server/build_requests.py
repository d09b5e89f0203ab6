"""Wheels wanted: build requests for (project, version, platform), recorded once each."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from index_server import repository
from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import build_requests
from index_server.services import Services
from platforms import Platform


def request_build(
    services: Services, project: str, version: str, platform: str, source: str
) -> bool:
    """Record the request unless it exists; True if it is new."""
    with write_transaction(services.engine) as conn:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        result = conn.execute(
            insert(build_requests)
            .values(
                project=project,
                version=version,
                platform=platform,
                source=source,
                requested_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing()
        )
    return result.rowcount == 1


def note_sdist_served(services: Services, platform: Platform, project: str, version: str) -> bool:
    """An sdist went out on a platform index: ask for a wheel if there is none yet."""
    if not platform.builds_on_first_sight:
        return False
    with read_connection(services.engine) as conn:
        if repository.wheel_exists(conn, project, version, platform.name):
            return False
        already = conn.execute(
            select(build_requests.c.id).where(
                build_requests.c.project == project,
                build_requests.c.version == version,
                build_requests.c.platform == platform.name,
            )
        ).first()
    if already:
        return False
    return request_build(services, project, version, platform.name, "first-sight")


def list_build_requests(services: Services) -> list[dict[str, object]]:
    with read_connection(services.engine) as conn:
        rows = conn.execute(select(build_requests).order_by(build_requests.c.id)).mappings()
        return [{**r, "requested_at": r["requested_at"].isoformat()} for r in rows]
