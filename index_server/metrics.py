"""Prometheus metrics at ``/metrics`` (text exposition format, via ``prometheus_client``).

Two kinds of numbers, kept in different ways so that they are right however many gunicorn
worker processes serve the app:

* **Shared state, read from the database at scrape time** (a custom collector): the build
  queue per platform and state, the age of the oldest queued job, workers alive, build and
  wait durations as histograms over the finished jobs, failures by error category, files
  and the upstream cache. Every process answers the same, since they all read one
  database. These histograms describe the jobs *currently* in the table: a rebuild resets
  a job, so their counts may go down (Prometheus treats that as a counter reset).

* **Per-process events**, counted in the process where they happen: HTTP requests by route
  (the Flask URL rule, never the raw path, so the label set stays small) and status, request
  durations, page-cache hits and misses (synced from ``services.pages`` after each request),
  and upstream fetches (``record_upstream_fetch``, which ``init_app`` subscribes to the
  upstream client's ``observe_fetches``).
  With ``PROMETHEUS_MULTIPROC_DIR`` set (to an empty directory, before the server starts and
  so before ``prometheus_client`` is imported), prometheus_client's multiprocess mode keeps
  these in files there and a scrape of any worker sums all workers, including exited ones.
  Without it each process reports only its own counts, which is right for a single process
  and makes a multi-worker server's numbers depend on which worker answers the scrape. Only
  counters and histograms are used per process, so no gauge mode or ``mark_process_dead``
  is needed.

If ``settings.read_requires_token`` is on, a scrape needs a read token (Prometheus'
``authorization`` / ``basic_auth`` settings), like every other read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Connection, case, func, select, true
from sqlalchemy.exc import SQLAlchemyError

from index_server import jobs
from index_server.db.engine import read_connection
from index_server.db.schema import build_jobs, files, upstream_files, upstream_pages
from index_server.services import Services
from index_server.upstream.fetch import observe_fetches
from index_server.views.common import require_read

log = logging.getLogger(__name__)
request_log = logging.getLogger("wheelfarm.request")

# No ``*_created`` series: they double the output and nothing here needs them.
disable_created_metrics()

# Registered here, not in prometheus_client's global registry: tests make many apps.
_PROCESS_REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "wheelfarm_http_requests",
    "HTTP requests answered, by route (URL rule), method and status.",
    ["route", "method", "status"],
    registry=_PROCESS_REGISTRY,
)
HTTP_DURATION = Histogram(
    "wheelfarm_http_request_duration_seconds",
    "Time to produce a response (streamed bodies not included), by route.",
    ["route"],
    registry=_PROCESS_REGISTRY,
)
PAGE_CACHE_HITS = Counter(
    "wheelfarm_page_cache_hits",
    "Simple API pages served from the page cache.",
    registry=_PROCESS_REGISTRY,
)
PAGE_CACHE_MISSES = Counter(
    "wheelfarm_page_cache_misses",
    "Simple API pages rendered (not in the page cache).",
    registry=_PROCESS_REGISTRY,
)
UPSTREAM_FETCHES = Counter(
    "wheelfarm_upstream_fetches",
    "Requests to upstream indexes, by kind (page|file) and outcome "
    "(ok|not_modified|not_found|error).",
    ["kind", "outcome"],
    registry=_PROCESS_REGISTRY,
)
_PER_PROCESS = (HTTP_REQUESTS, HTTP_DURATION, PAGE_CACHE_HITS, PAGE_CACHE_MISSES, UPSTREAM_FETCHES)

BUILD_SECONDS_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
WAIT_SECONDS_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
FINISHED = ("succeeded", "failed")
UNMATCHED = "<unmatched>"


def record_upstream_fetch(kind: str, outcome: str) -> None:
    """Count one request to an upstream: kind ``page`` or ``file``; outcome as above."""
    UPSTREAM_FETCHES.labels(kind, outcome).inc()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _PageCacheSync:
    """Adds the page cache's new hits and misses (plain ints) to the counters."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.hits = self.misses = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        cache = self.services.pages
        with self.lock:
            hits, misses = cache.hits, cache.misses
            if hits > self.hits:
                PAGE_CACHE_HITS.inc(hits - self.hits)
            if misses > self.misses:
                PAGE_CACHE_MISSES.inc(misses - self.misses)
            self.hits, self.misses = hits, misses


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo:
        return value
    return value.replace(tzinfo=UTC)


def _histogram_rows(
    conn: Connection,
    column: ColumnElement[float],
    buckets: tuple[float, ...],
    group: tuple[ColumnElement[str], ...],
    where: ColumnElement[bool],
) -> Iterator[tuple[tuple[str, ...], list[tuple[str, float]], float]]:
    """(labels, cumulative buckets, sum) per group, counted by the database."""
    counts = [func.sum(case((column <= b, 1), else_=0)) for b in buckets]
    query = (
        select(*group, func.count(), func.coalesce(func.sum(column), 0.0), *counts)
        .where(column.is_not(None), where)
        .group_by(*group)
    )
    for row in conn.execute(query):
        labels = tuple(str(v) for v in row[: len(group)])
        total, seconds = int(row[len(group)]), float(row[len(group) + 1])
        cumulative = [
            (_bucket_label(b), float(n or 0))
            for b, n in zip(buckets, row[len(group) + 2 :], strict=True)
        ]
        yield labels, [*cumulative, ("+Inf", float(total))], seconds


def _bucket_label(bound: float) -> str:
    return f"{float(bound)}"


class DatabaseCollector(Collector):
    """Numbers every process shares, read from the database when Prometheus scrapes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "wheelfarm_database_up", "1 if the scrape could read the database, else 0."
        )
        try:
            families = self._families()
        except SQLAlchemyError:
            log.exception("metrics: reading the database failed")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> list[Metric]:
        now = datetime.now(UTC)
        platforms = sorted(self.services.platforms)
        with read_connection(self.services.engine) as conn:
            families = [
                *self._queue(conn, platforms, now),
                *self._durations(conn),
                self._failures(conn),
                *self._files(conn),
                *self._upstream(conn),
            ]
        families.extend(self._workers(platforms))
        return families

    def _queue(self, conn: Connection, platforms: list[str], now: datetime) -> list[Metric]:
        jobs_family = GaugeMetricFamily(
            "wheelfarm_build_jobs",
            "Build jobs by platform and state; state=queued is the queue depth.",
            labels=["platform", "state"],
        )
        counts: dict[tuple[str, str], int] = {
            (p, s): 0 for p in platforms for s in jobs.ACTIVE_STATES
        }
        rows = conn.execute(
            select(build_jobs.c.platform, build_jobs.c.state, func.count()).group_by(
                build_jobs.c.platform, build_jobs.c.state
            )
        )
        for platform, state, count in rows:
            counts[(platform, state)] = count
        for (platform, state), count in sorted(counts.items()):
            jobs_family.add_metric([platform, state], count)
        oldest = GaugeMetricFamily(
            "wheelfarm_build_queue_oldest_seconds",
            "Age of the oldest queued job per platform (0 when none is queued).",
            labels=["platform"],
        )
        ages = dict.fromkeys(platforms, 0.0)
        rows = conn.execute(
            select(build_jobs.c.platform, func.min(build_jobs.c.requested_at))
            .where(build_jobs.c.state == "queued")
            .group_by(build_jobs.c.platform)
        )
        for platform, first in rows:
            when = _aware(first)
            ages[platform] = max(0.0, (now - when).total_seconds()) if when else 0.0
        for platform, age in sorted(ages.items()):
            oldest.add_metric([platform], age)
        return [jobs_family, oldest]

    def _durations(self, conn: Connection) -> list[Metric]:
        built = HistogramMetricFamily(
            "wheelfarm_build_duration_seconds",
            "Build time of finished jobs, by platform and outcome (succeeded|failed).",
            labels=["platform", "outcome"],
        )
        c = build_jobs.c
        for labels, buckets, seconds in _histogram_rows(
            conn,
            c.build_seconds,
            BUILD_SECONDS_BUCKETS,
            (c.platform, c.state),
            c.state.in_(FINISHED),
        ):
            built.add_metric(list(labels), buckets, seconds)
        waited = HistogramMetricFamily(
            "wheelfarm_build_wait_seconds",
            "Time jobs waited in the queue before a worker claimed them, by platform.",
            labels=["platform"],
        )
        for labels, buckets, seconds in _histogram_rows(
            conn, c.waited_seconds, WAIT_SECONDS_BUCKETS, (c.platform,), true()
        ):
            waited.add_metric(list(labels), buckets, seconds)
        return [built, waited]

    def _failures(self, conn: Connection) -> Metric:
        family = GaugeMetricFamily(
            "wheelfarm_build_failures",
            "Failed jobs by platform and error category.",
            labels=["platform", "category"],
        )
        rows = conn.execute(
            select(build_jobs.c.platform, build_jobs.c.error_category, func.count())
            .where(build_jobs.c.state == "failed")
            .group_by(build_jobs.c.platform, build_jobs.c.error_category)
        )
        for platform, category, count in rows:
            family.add_metric([platform, category or "other"], count)
        return family

    def _files(self, conn: Connection) -> list[Metric]:
        count = GaugeMetricFamily(
            "wheelfarm_files",
            "Files in the index by platform ('all' for sdists and pure wheels), type, origin.",
            labels=["platform", "packagetype", "origin"],
        )
        size = GaugeMetricFamily(
            "wheelfarm_file_bytes",
            "Bytes of the files in the index, labelled as wheelfarm_files.",
            labels=["platform", "packagetype", "origin"],
        )
        group = (files.c.platform, files.c.packagetype, files.c.origin)
        rows = conn.execute(
            select(*group, func.count(), func.coalesce(func.sum(files.c.size), 0)).group_by(*group)
        )
        for platform, packagetype, origin, n, total in rows:
            labels = [platform or "all", packagetype, origin]
            count.add_metric(labels, n)
            size.add_metric(labels, total)
        return [count, size]

    def _upstream(self, conn: Connection) -> list[Metric]:
        pages = GaugeMetricFamily(
            "wheelfarm_upstream_pages_cached",
            "Upstream project pages in the shared cache, by upstream status (200|404) and "
            "whether the last refresh failed.",
            labels=["status", "failing"],
        )
        failing = upstream_pages.c.last_error.is_not(None)
        rows = conn.execute(
            select(upstream_pages.c.status, failing, func.count()).group_by(
                upstream_pages.c.status, failing
            )
        )
        for status, failing, n in rows:
            pages.add_metric([str(status), "true" if failing else "false"], n)
        pulled = GaugeMetricFamily(
            "wheelfarm_upstream_files_cached", "Upstream files pulled through and kept."
        )
        pulled_bytes = GaugeMetricFamily(
            "wheelfarm_upstream_file_bytes", "Bytes of the upstream files kept."
        )
        n, total = conn.execute(
            select(func.count(), func.coalesce(func.sum(upstream_files.c.size), 0))
        ).one()
        pulled.add_metric([], n)
        pulled_bytes.add_metric([], total)
        return [pages, pulled, pulled_bytes]

    def _workers(self, platforms: list[str]) -> list[Metric]:
        known = jobs.list_workers(self.services)
        alive = [w for w in known if w["alive"]]
        workers = GaugeMetricFamily(
            "wheelfarm_workers",
            "Build workers by status: alive (heartbeat within two leases), busy (alive, on "
            "a job), stale.",
            labels=["status"],
        )
        workers.add_metric(["alive"], len(alive))
        workers.add_metric(["busy"], sum(1 for w in alive if w["current_job"]))
        workers.add_metric(["stale"], len(known) - len(alive))
        serving: dict[str, int] = defaultdict(int, dict.fromkeys(platforms, 0))
        for worker in alive:
            for platform in worker["platforms"]:
                serving[platform] += 1
        per_platform = GaugeMetricFamily(
            "wheelfarm_workers_alive_for_platform",
            "Alive workers that build for a platform.",
            labels=["platform"],
        )
        for platform, n in sorted(serving.items()):
            per_platform.add_metric([platform], n)
        return [workers, per_platform]


def render(services: Services) -> bytes:
    """The exposition text: this process's (or all processes') counters and the DB's numbers."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in _PER_PROCESS:
            registry.register(metric)
    registry.register(DatabaseCollector(services))
    return generate_latest(registry)


# The labelled children, looked up once: ``labels()`` builds, locks and checks each time.
# Routes are URL rules, not paths, so there are few keys.
@lru_cache(maxsize=4096)
def _request_counter(route: str, method: str, status: int) -> Counter:
    return HTTP_REQUESTS.labels(route, method, str(status))


@lru_cache(maxsize=1024)
def _duration_histogram(route: str) -> Histogram:
    return HTTP_DURATION.labels(route)


def init_app(app: Flask, services: Services) -> None:
    """Count every request, keep the page-cache counters in step, and serve ``/metrics``."""
    sync_page_cache = _PageCacheSync(services)
    observe_fetches(record_upstream_fetch)

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count_request(response: Response) -> Response:
        started = g.pop("metrics_started", None)
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED
        _request_counter(route, request.method, response.status_code).inc()
        if started is not None:
            elapsed = time.perf_counter() - started
            _duration_histogram(route).observe(elapsed)
            # One line per request at DEBUG; errors and slow requests at INFO (the
            # default level), so a busy index does not spend its CPU on its log.
            level = logging.INFO if response.status_code >= 500 or elapsed > 1 else logging.DEBUG
            if not request_log.isEnabledFor(level):
                sync_page_cache()
                return response
            request_log.log(
                level,
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 1),
                },
            )
        sync_page_cache()
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        require_read()
        sync_page_cache()
        return Response(render(services), content_type=CONTENT_TYPE_LATEST)
