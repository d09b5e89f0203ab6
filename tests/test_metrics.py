"""/metrics: the numbers from the database, the per-process counters (also summed across
gunicorn workers in multiprocess mode), and the one-line-per-event logging."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from client.logging_setup import JsonFormatter, TextFormatter, logging_config
from index_server import metrics
from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.db.engine import write_transaction
from index_server.db.schema import upstream_files, upstream_pages
from index_server.services import Services, build_services
from tests.conftest import ADMIN_TOKEN, LiveServer, start_server, stop_server
from tests.console_helpers import OTHER_PLATFORM, PLATFORM, FlaskHttp, Scenario, populate

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition text (parsed by prometheus_client's own parser)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.content_type.startswith("text/plain; version=")
    return parse(response.text)


@pytest.fixture
def scenario(
    client: FlaskClient, services: Services, tmp_path: Path, upload_token: str
) -> Scenario:
    build = create_token(services.engine, "worker", "build")[1]
    return populate(FlaskHttp(client), services, tmp_path, upload_token, build)


def test_build_queue_workers_and_durations_come_from_the_database(
    client: FlaskClient, scenario: Scenario
) -> None:
    s = scrape(client)
    assert value(s, "wheelfarm_database_up") == 1
    jobs_by = {
        (platform, state): value(s, "wheelfarm_build_jobs", platform=platform, state=state)
        for platform in (PLATFORM, OTHER_PLATFORM)
        for state in ("queued", "running", "succeeded", "failed")
    }
    assert jobs_by == {
        (PLATFORM, "queued"): 0,
        (PLATFORM, "running"): 1,
        (PLATFORM, "succeeded"): 1,
        (PLATFORM, "failed"): 1,
        (OTHER_PLATFORM, "queued"): 1,
        (OTHER_PLATFORM, "running"): 0,
        (OTHER_PLATFORM, "succeeded"): 0,
        (OTHER_PLATFORM, "failed"): 0,
    }
    # Every configured platform has a queue series, even with nothing queued.
    assert ("wheelfarm_build_jobs", frozenset({("platform", PLATFORM), ("state", "queued")})) in s
    assert value(s, "wheelfarm_build_queue_oldest_seconds", platform=OTHER_PLATFORM) >= 0
    assert value(s, "wheelfarm_workers", status="alive") == 1
    assert value(s, "wheelfarm_workers", status="busy") == 1
    assert value(s, "wheelfarm_workers", status="stale") == 0
    assert value(s, "wheelfarm_workers_alive_for_platform", platform=PLATFORM) == 1
    assert value(s, "wheelfarm_workers_alive_for_platform", platform=OTHER_PLATFORM) == 0
    built = {"platform": PLATFORM, "outcome": "succeeded"}
    assert value(s, "wheelfarm_build_duration_seconds_count", **built) == 1
    assert value(s, "wheelfarm_build_duration_seconds_sum", **built) == 42.5
    assert value(s, "wheelfarm_build_duration_seconds_bucket", le="30.0", **built) == 0
    assert value(s, "wheelfarm_build_duration_seconds_bucket", le="60.0", **built) == 1
    assert value(s, "wheelfarm_build_duration_seconds_bucket", le="+Inf", **built) == 1
    failed = {"platform": PLATFORM, "outcome": "failed"}
    assert value(s, "wheelfarm_build_duration_seconds_bucket", le="10.0", **failed) == 1
    assert value(s, "wheelfarm_build_wait_seconds_count", platform=PLATFORM) == 3  # claimed
    assert (
        value(s, "wheelfarm_build_failures", platform=PLATFORM, category="missing_system_library")
        == 1
    )
    hosted = {"platform": "all", "packagetype": "sdist", "origin": "upload"}
    assert value(s, "wheelfarm_files", **hosted) == 2
    built_wheels = {"platform": PLATFORM, "packagetype": "bdist_wheel", "origin": "build"}
    assert value(s, "wheelfarm_files", **built_wheels) == 1
    assert value(s, "wheelfarm_file_bytes", **built_wheels) > 0
    assert value(s, "wheelfarm_upstream_files_cached") == 0


def test_upstream_cache_numbers(client: FlaskClient, services: Services) -> None:
    now = datetime.now(UTC)
    page = {"files": "[]", "content_hash": "0" * 64, "fetched_at": now, "expires_at": now}
    ok = {**page, "last_error": None}
    with write_transaction(services.engine) as conn:
        conn.execute(
            insert(upstream_pages),
            [
                {"upstream": "u/", "project": "a", "status": 200, **ok},
                {"upstream": "u/", "project": "b", "status": 200, **page, "last_error": "x"},
                {"upstream": "u/", "project": "c", "status": 404, **ok},
            ],
        )
        conn.execute(
            insert(upstream_files).values(
                sha256="1" * 64,
                filename="a-1.0.tar.gz",
                project="a",
                size=1234,
                source_url="u/a-1.0.tar.gz",
                fetched_at=now,
            )
        )
    s = scrape(client)
    assert value(s, "wheelfarm_upstream_pages_cached", status="200", failing="false") == 1
    assert value(s, "wheelfarm_upstream_pages_cached", status="200", failing="true") == 1
    assert value(s, "wheelfarm_upstream_pages_cached", status="404", failing="false") == 1
    assert value(s, "wheelfarm_upstream_files_cached") == 1
    assert value(s, "wheelfarm_upstream_file_bytes") == 1234


def test_requests_are_counted_by_route_and_status(client: FlaskClient, scenario: Scenario) -> None:
    before = scrape(client)
    page = f"/{PLATFORM}/simple/demo-pkg/"
    for _ in range(3):
        assert client.get(page).status_code == 200
    assert client.get("/no/such/page/at/all").status_code == 404
    assert client.get(f"/{PLATFORM}/simple/no-such-project/").status_code == 404
    metrics.record_upstream_fetch("page", "not_modified")
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/<platform>/simple/<project>/"
    assert delta("wheelfarm_http_requests_total", route=route, method="GET", status="200") == 3
    assert delta("wheelfarm_http_requests_total", route=route, method="GET", status="404") == 1
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert delta("wheelfarm_http_requests_total", **unmatched) == 1
    assert delta("wheelfarm_http_request_duration_seconds_count", route=route) == 4
    # The raw path never becomes a label.
    assert not any(page in dict(labels).get("route", "") for _, labels in after)
    # One render, then the cache: the page cache's own counts, mirrored.
    assert delta("wheelfarm_page_cache_misses_total") >= 1
    assert delta("wheelfarm_page_cache_hits_total") >= 2
    assert delta("wheelfarm_upstream_fetches_total", kind="page", outcome="not_modified") == 1


def test_metrics_need_a_token_when_reading_does(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {},
        data_dir=tmp_path / "closed",
        admin_token=ADMIN_TOKEN,
        upstream_urls=(),
        read_requires_token=True,
    )
    services = build_services(settings)
    client = create_app(services=services).test_client()
    assert client.get("/metrics").status_code == 401
    read = create_token(services.engine, "prometheus", "read")[1]
    response = client.get("/metrics", headers={"Authorization": f"Bearer {read}"})
    assert response.status_code == 200 and "wheelfarm_database_up 1.0" in response.text
    services.engine.dispose()


@pytest.fixture
def multiprocess_server(tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    server = start_server(
        tmp_path / "data", tmp_path / "server.log", PROMETHEUS_MULTIPROC_DIR=str(prom_dir)
    )
    yield server, prom_dir
    stop_server(server)


def test_multiprocess_mode_sums_every_gunicorn_worker(
    multiprocess_server: tuple[LiveServer, Path],
) -> None:
    """Requests answered by both workers add up in a scrape, whichever worker answers it."""
    server, prom_dir = multiprocess_server
    health = {"route": "/health", "method": "GET", "status": "200"}
    # start_server's own readiness checks count too.
    baseline = parse(requests.get(server.url + "/metrics", timeout=10).text)
    sent = value(baseline, "wheelfarm_http_requests_total", **health)
    assert sent >= 1
    lock = threading.Lock()

    def hit(n: int) -> None:
        nonlocal sent
        for _ in range(n):
            # A new connection each time, so both workers take some.
            assert requests.get(server.url + "/health", timeout=10).status_code == 200
            with lock:
                sent += 1

    for _ in range(20):  # bounded: stop once two worker processes have counted requests
        threads = [threading.Thread(target=hit, args=(5,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pids = {p.stem.rsplit("_", 1)[-1] for p in prom_dir.glob("counter_*.db")}
        if len(pids) >= 2:
            break
    assert len(pids) >= 2, "one gunicorn worker answered every request"
    for _ in range(6):  # any worker may answer the scrape: all say the same
        response = requests.get(server.url + "/metrics", timeout=10)
        assert response.status_code == 200
        samples = parse(response.text)
        assert value(samples, "wheelfarm_http_requests_total", **health) == sent
        assert value(samples, "wheelfarm_database_up") == 1


def test_json_log_lines_one_per_event() -> None:
    stream = __import__("io").StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("wheelfarm.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("build %s failed", 7, extra={"job_id": 7, "event": "build_failed"})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("oops")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # a traceback stays inside its line
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "build 7 failed" and first["level"] == "WARNING"
    assert (first["job_id"], first["event"], first["logger"]) == (7, "build_failed", logger.name)
    assert first["ts"].endswith("+00:00")
    assert "ValueError: boom" in second["exc"]


def test_text_format_and_bad_settings() -> None:
    record = logging.LogRecord("wheelfarm.x", logging.INFO, __file__, 1, "hello", None, None)
    record.route = "/a b"
    line = TextFormatter().format(record)
    assert line.endswith(' INFO wheelfarm.x: hello route="/a b"')
    with pytest.raises(ValueError, match="WHEELFARM_LOG_FORMAT"):
        logging_config({"WHEELFARM_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="WHEELFARM_LOG_LEVEL"):
        logging_config({"WHEELFARM_LOG_LEVEL": "LOUD"})
    config = logging_config({"WHEELFARM_LOG_FORMAT": "json", "WHEELFARM_LOG_LEVEL": "debug"})
    assert config["root"]["level"] == "DEBUG"
    assert config["loggers"]["gunicorn.access"]["level"] == "WARNING"


def test_the_app_logs_each_request_as_json(tmp_path: Path) -> None:
    """In a fresh process configured by WHEELFARM_LOG_FORMAT=json, as the server would be;
    a line per request at DEBUG (at the default INFO level only errors and slow requests)."""
    program = f"""
import logging
from pathlib import Path
from client.logging_setup import configure_logging
from index_server.app import create_app
from index_server.config import Settings
from index_server.db.engine import write_transaction
from index_server.db.schema import upstream_files, upstream_pages
configure_logging()
app = create_app(Settings.from_env({{}}, data_dir=Path({str(tmp_path / "d")!r}), upstream_urls=()))
client = app.test_client()
client.get("/health")
client.get("/console/builds/12345")
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        env={
            "WHEELFARM_LOG_FORMAT": "json",
            "WHEELFARM_LOG_LEVEL": "DEBUG",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    requests_logged = [line for line in lines if line["logger"] == "wheelfarm.request"]
    assert [(r["route"], r["status"]) for r in requests_logged] == [
        ("/health", 200),
        ("/console/builds/<int:job_id>", 404),
    ]
    assert all(r["duration_ms"] >= 0 for r in requests_logged)
