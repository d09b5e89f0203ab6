"""In-process measurements with the Flask test client: SQL statements per request, cProfile."""

from __future__ import annotations

import cProfile
import io
import pstats
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event

from index_server.app import create_app
from index_server.config import Settings
from index_server.services import Services, build_services

HTML_ACCEPT = "text/html"


@dataclass
class QueryCount:
    kind: str  # requests of one kind must cost the same number of statements
    label: str
    path: str
    accept: str
    cold: int  # statements of the first request (empty page cache, fresh connection pool)
    warm: int  # statements of the same request again
    cold_statements: list[str]
    warm_statements: list[str]
    warm_checkouts: int  # connections taken from the pool by the warm request
    warm_commits: int  # COMMITs/ROLLBACKs of the warm request (sent without a cursor)


@contextmanager
def _services(settings: Settings) -> Iterator[Services]:
    svc = build_services(settings, migrate=False)
    try:
        yield svc
    finally:
        svc.engine.dispose()


def count_queries(settings: Settings, cases: list[tuple[str, str, str, str]]) -> list[QueryCount]:
    """For each (kind, label, path, accept): statements of a cold and of a warm request.

    Every case gets fresh services (empty page cache, empty connection pool), so "cold" is a
    process's very first request for that page.
    """
    return [_count_one(settings, *case) for case in cases]


def _count_one(settings: Settings, kind: str, label: str, path: str, accept: str) -> QueryCount:
    with _services(settings) as svc:
        statements: list[str] = []
        other = {"checkout": 0, "commit": 0}

        def record(statement: str) -> None:
            statements.append(" ".join(statement.split()))

        def checkout(dbapi_connection: Any, *_args: Any) -> None:
            other["checkout"] += 1
            # SQLite's own trace sees every statement, also those run on the raw DBAPI
            # connection (the hot-path lookups) that SQLAlchemy's events never see.
            dbapi_connection.set_trace_callback(record)

        def commit(*_args: Any) -> None:
            other["commit"] += 1

        event.listen(svc.engine, "checkout", checkout)
        event.listen(svc.engine, "commit", commit)
        event.listen(svc.engine, "rollback", commit)
        client = create_app(services=svc).test_client()
        runs = []
        for _ in range(2):
            statements.clear()
            other.update(checkout=0, commit=0)
            response = client.get(path, headers={"Accept": accept})
            if response.status_code != 200:
                raise AssertionError(f"{path}: HTTP {response.status_code}")
            runs.append(list(statements))
        return QueryCount(
            kind,
            label,
            path,
            accept,
            len(runs[0]),
            len(runs[1]),
            runs[0],
            runs[1],
            other["checkout"],
            other["commit"],
        )


GROUPS = (
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/werkzeug/", "werkzeug"),
    ("/flask/", "flask"),
    ("/index_server/", "index_server"),
    ("/packaging/", "packaging"),
    ("/platforms/", "index_server"),
    ("/storage/", "index_server"),
)


def _group(filename: str) -> str:
    if filename == "~":
        return "builtins/C (sqlite3, hashing, ...)"
    for needle, label in GROUPS:
        if needle in filename:
            return label
    return "stdlib/other"


def profile_requests(
    settings: Settings, paths: list[str], headers: dict[str, str], requests: int, top: int = 25
) -> dict[str, Any]:
    """CPU time and cProfile of the Flask app alone, ``requests`` warm requests over ``paths``.

    The WSGI app is called directly with prepared environs (no server, no test client), the
    page cache warmed first: this is the app's own cost per request in the steady state.
    """
    import time

    from werkzeug.test import EnvironBuilder

    def start_response(status: str, _headers: list[tuple[str, str]], *_exc: Any) -> None:
        if not status.startswith(("200", "304")):
            raise AssertionError(status)

    with _services(settings) as svc:
        app = create_app(services=svc)
        environs = {}
        for path in paths:
            builder = EnvironBuilder(path=path, headers=headers, base_url="http://127.0.0.1:8080")
            environs[path] = builder.get_environ()
            builder.close()

        def call(path: str) -> None:
            body = app.wsgi_app(dict(environs[path]), start_response)
            for _ in body:
                pass
            if hasattr(body, "close"):
                body.close()

        for path in paths:
            call(path)
        rng = random.Random(1)
        chosen = [rng.choice(paths) for _ in range(requests)]
        # CPU time of this process: other load on the machine hardly changes it.
        began = time.process_time()
        for path in chosen:
            call(path)
        per_request_us = (time.process_time() - began) / requests * 1e6
        profiler = cProfile.Profile()
        profiler.enable()
        for path in chosen:
            call(path)
        profiler.disable()
    stats = pstats.Stats(profiler)
    by_group: dict[str, float] = {}
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_group[_group(filename)] = by_group.get(_group(filename), 0.0) + tottime
        total += tottime
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.strip_dirs()
    out.write(f"== {requests} warm requests, sorted by own time (tottime)\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write("== sorted by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(top)
    return {
        "us_per_request": round(per_request_us, 1),
        "self_by_group": sorted(
            ((g, round(100 * t / total, 1)) for g, t in by_group.items()),
            key=lambda item: -item[1],
        ),
        "report": out.getvalue(),
    }
