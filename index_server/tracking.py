"""Proactive builds: a tracked project's new upstream releases are built before anyone asks.

A project is tracked by an admin (``POST /api/tracked``, ``wheelfarm track``), or every
project with platform wheels is, with ``WHEELFARM_TRACK_BUILT_PROJECTS``. The tracker (a
thread in each server process; one round at a time across processes, by a named lock)
looks at each tracked project's upstream pages every few seconds; a page is fetched again
only once it has expired (``upstream_ttl``), so a new release is seen within that TTL.
The versions present when tracking began are the baseline: only later ones are new, and
each new one is queued on every (not retired) platform the project has wheels for.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from packaging.utils import InvalidSdistFilename, parse_sdist_filename
from sqlalchemy import Connection, delete, select, update

from index_server import jobs, repository
from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import ALL_PLATFORMS, files, projects, tracked_projects
from index_server.locks import LockTimeout, named_lock
from index_server.services import Services
from index_server.upstream.pages import load_files, read_states, upstream_view

log = logging.getLogger("wheelfarm.tracking")

TRACK_SOURCE = "track"
SDIST_SUFFIXES = (".tar.gz", ".zip")


def _now() -> datetime:
    return datetime.now(UTC)


def upstream_versions(services: Services, project: str) -> set[str]:
    """Versions with an sdist on the project's upstream pages (refreshed when expired)."""
    with read_connection(services.engine) as conn:
        states = read_states(conn, project)
    view = upstream_view(services, project, states)
    with read_connection(services.engine) as conn:
        pages = load_files(conn, project, view.found)
    found = set()
    for page in pages:
        for entry in page:
            if not entry.filename.endswith(SDIST_SUFFIXES) or entry.yanked:
                continue
            try:
                found.add(str(parse_sdist_filename(entry.filename)[1]))
            except (InvalidSdistFilename, ValueError):
                continue
    return found


def wheel_platforms(conn: Connection, project: str) -> list[str]:
    rows = conn.execute(
        select(files.c.platform)
        .join(projects, projects.c.id == files.c.project_id)
        .where(
            projects.c.name == project,
            files.c.packagetype == "bdist_wheel",
            files.c.platform != ALL_PLATFORMS,
        )
        .distinct()
    )
    return sorted(r[0] for r in rows)


def track(services: Services, project: str, actor: str) -> dict[str, Any]:
    """Track a project from now on: the versions upstream has now are the baseline."""
    baseline = sorted(upstream_versions(services, project))
    now = _now()
    values = {"explicit": True, "versions": json.dumps(baseline), "checked_at": now}
    with write_transaction(services.engine) as conn:
        conn.execute(
            jobs._insert(conn)(tracked_projects)
            .values(project=project, created_at=now, created_by=actor, **values)
            .on_conflict_do_update(index_elements=[tracked_projects.c.project], set_=values)
        )
        repository.record_event(conn, actor, "track", project, None, ", ".join(baseline))
    return {"project": project, "versions": baseline}


def untrack(services: Services, project: str, actor: str) -> bool:
    with write_transaction(services.engine) as conn:
        removed = conn.execute(
            delete(tracked_projects).where(
                tracked_projects.c.project == project, tracked_projects.c.explicit
            )
        ).rowcount
        if removed:
            repository.record_event(conn, actor, "untrack", project, None, None)
    return removed > 0


def list_tracked(services: Services) -> list[dict[str, Any]]:
    with read_connection(services.engine) as conn:
        rows = conn.execute(select(tracked_projects).order_by(tracked_projects.c.project))
        result = []
        for row in rows.mappings():
            item = jobs.row_json(row, ("id", "versions"))
            item["versions"] = json.loads(row["versions"])
            item["platforms"] = wheel_platforms(conn, row["project"])
            result.append(item)
    return result


def _projects_to_check(services: Services) -> dict[str, list[str] | None]:
    """project -> its baseline versions (None: not tracked yet, by the global setting)."""
    with read_connection(services.engine) as conn:
        found: dict[str, list[str] | None] = {
            r.project: json.loads(r.versions)
            for r in conn.execute(select(tracked_projects.c.project, tracked_projects.c.versions))
        }
        if services.settings.track_built_projects:
            built = conn.execute(
                select(projects.c.name)
                .join(files, files.c.project_id == projects.c.id)
                .where(files.c.packagetype == "bdist_wheel", files.c.platform != ALL_PLATFORMS)
                .distinct()
            )
            for (name,) in built:
                found.setdefault(name, None)
    return found


def check_once(services: Services) -> list[jobs.RequestOutcome]:
    """One round over the tracked projects; the build requests it made."""
    queued: list[jobs.RequestOutcome] = []
    for project, baseline in sorted(_projects_to_check(services).items()):
        try:
            versions = upstream_versions(services, project)
        except Exception as exc:  # one project's upstream trouble never stops the round
            log.warning("tracking %s: %s", project, exc)
            continue
        now = _now()
        if baseline is None:  # tracked by the global setting from now on
            with write_transaction(services.engine) as conn:
                conn.execute(
                    jobs._insert(conn)(tracked_projects)
                    .values(
                        project=project,
                        explicit=False,
                        versions=json.dumps(sorted(versions)),
                        checked_at=now,
                        created_at=now,
                        created_by="tracker",
                    )
                    .on_conflict_do_nothing()
                )
            continue
        new = sorted(versions - set(baseline))
        if new:
            with read_connection(services.engine) as conn:
                platforms = wheel_platforms(conn, project)
            for version in new:
                for name in platforms:
                    known = services.platforms.get(name)
                    if known is None or known.retired:
                        continue
                    outcome = jobs.request_build(
                        services, project, version, name, TRACK_SOURCE, "tracker"
                    )
                    queued.append(outcome)
                    log.info("new release %s %s: %s on %s", project, version, outcome.outcome, name)
        with write_transaction(services.engine) as conn:
            conn.execute(
                update(tracked_projects)
                .where(tracked_projects.c.project == project)
                .values(versions=json.dumps(sorted(set(baseline) | versions)), checked_at=now)
            )
    return queued


def tracker_interval(services: Services) -> float:
    """Seconds between rounds: a quarter of the page TTL, between 1 and 30 seconds."""
    return max(1.0, min(services.settings.upstream_ttl / 4, 30.0))


def run_tracker(services: Services, stop: threading.Event) -> None:
    """Rounds until ``stop`` is set; only one process at a time runs a round."""
    interval = tracker_interval(services)
    while not stop.wait(interval):
        try:
            with named_lock(
                services.engine, services.settings.data_dir / "locks", "wheelfarm-tracker", 0.05
            ):
                check_once(services)
        except LockTimeout:
            continue  # another process's round
        except Exception:
            log.exception("tracker round failed")


def start_tracker(services: Services) -> threading.Event:
    """Run the tracker in a daemon thread of this process; set the event to stop it."""
    stop = threading.Event()
    threading.Thread(target=run_tracker, args=(services, stop), daemon=True).start()
    return stop
