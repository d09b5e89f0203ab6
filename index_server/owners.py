"""Who may write a hosted project: its owners (a token's owner: a user or a team).

* The first upload of a name makes the uploading token's owner its owner, unless the name
  exists on an upstream: then only an admin can let it be hosted here (by adding an owner,
  or by naming it in ``WHEELFARM_PRIVATE_PROJECTS``), so shadowing a public project is
  always an admin's decision (the dependency-confusion guard).
* Afterwards only its owners (and admins) upload to it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from fnmatch import fnmatchcase

from sqlalchemy import Connection, delete, insert, select

from index_server import repository
from index_server.auth import Identity
from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import project_owners
from index_server.services import Services
from index_server.upstream import pages as upstream_pages


class NotAllowed(PermissionError):
    """The token may not write this project (a 403); the text says why."""


class UpstreamUnknown(RuntimeError):
    """Whether the name exists upstream cannot be told now (a 503)."""


def owners_of(conn: Connection, project: str) -> list[str]:
    rows = conn.execute(
        select(project_owners.c.owner)
        .where(project_owners.c.project == project)
        .order_by(project_owners.c.owner)
    )
    return [r[0] for r in rows]


def list_owners(services: Services, project: str) -> list[dict[str, object]]:
    with read_connection(services.engine) as conn:
        rows = conn.execute(
            select(project_owners)
            .where(project_owners.c.project == project)
            .order_by(project_owners.c.owner)
        ).mappings()
        return [
            {
                "owner": r["owner"],
                "added_at": r["added_at"].replace(tzinfo=r["added_at"].tzinfo or UTC).isoformat(),
                "added_by": r["added_by"],
            }
            for r in rows
        ]


def add_owner(services: Services, project: str, owner: str, actor: str) -> bool:
    """Make ``owner`` an owner (an admin's action); False if it was one already."""
    with write_transaction(services.engine) as conn:
        if owner in owners_of(conn, project):
            return False
        _insert(conn, project, owner, actor)
        repository.record_event(conn, actor, "owner add", project, None, owner)
    return True


def remove_owner(services: Services, project: str, owner: str, actor: str) -> bool:
    with write_transaction(services.engine) as conn:
        removed = conn.execute(
            delete(project_owners).where(
                project_owners.c.project == project, project_owners.c.owner == owner
            )
        ).rowcount
        if removed:
            repository.record_event(conn, actor, "owner remove", project, None, owner)
    return removed > 0


def _insert(conn: Connection, project: str, owner: str, actor: str) -> None:
    conn.execute(
        insert(project_owners).values(
            project=project, owner=owner, added_at=datetime.now(UTC), added_by=actor[:200]
        )
    )


def is_private_name(services: Services, project: str) -> bool:
    return any(fnmatchcase(project, p) for p in services.settings.private_projects)


def check_upload(services: Services, who: Identity, project: str) -> None:
    """Raise unless ``who`` may upload a file of ``project`` (checked before the bytes are
    read into storage; :func:`claim` repeats the owner check in the upload's transaction)."""
    if not who.may_write(project):
        raise NotAllowed(f"this token may not write project {project!r} (its project scope)")
    with read_connection(services.engine) as conn:
        owners = owners_of(conn, project)
    if owners:
        if who.is_admin or who.owner in owners:
            return
        raise NotAllowed(
            f"project {project!r} belongs to {', '.join(owners)}: only its owners and admins "
            "upload to it"
        )
    if who.is_admin or is_private_name(services, project) or not services.settings.upstream_urls:
        return
    view = upstream_pages.upstream_view(services, project, services.hot.upstream_states(project))
    if view.found:
        where = ", ".join(p.upstream for p in view.found)
        raise NotAllowed(
            f"project {project!r} exists upstream ({where}): an upload here would shadow it; "
            f"an admin may allow it (wheelfarm owner add {project} OWNER, or "
            "WHEELFARM_PRIVATE_PROJECTS)"
        )
    if view.unavailable:
        raise UpstreamUnknown(
            f"cannot tell whether {project!r} exists upstream ({'; '.join(view.unavailable)}); "
            "retry later"
        )


def claim(conn: Connection, project: str, who: Identity, actor: str) -> None:
    """In the upload's transaction: the first upload makes the token's owner the owner;
    a concurrent claim by someone else that committed first makes this one a 403."""
    owners = owners_of(conn, project)
    if not owners:
        if who.owner:
            _insert(conn, project, who.owner, actor)
            repository.record_event(
                conn, actor, "owner add", project, None, f"{who.owner} (first upload)"
            )
        return
    if not who.is_admin and who.owner not in owners:
        raise NotAllowed(f"project {project!r} belongs to {', '.join(owners)}")
