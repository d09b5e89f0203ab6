"""Fixtures: an in-process app for fast HTTP checks, and a real server on a free port."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.services import Services, build_services

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from tests.s3_helpers import MotoServer

ADMIN_TOKEN = "wf_test-admin-token-0123456789"
BIN = Path(sys.executable).parent
# The suite runs on SQLite, and again on PostgreSQL when this names a server (.ci/run).
TEST_POSTGRES_URL = os.environ.get("WHEELFARM_TEST_DATABASE_URL", "")
_created_databases: set[str] = set()
# For tests about the embedded SQLite file itself; they ran in the SQLite pass.
sqlite_only = pytest.mark.skipif(
    bool(TEST_POSTGRES_URL), reason="checks the embedded SQLite database file"
)


def database_for(data_dir: Path) -> str | None:
    """On PostgreSQL runs, a fresh database for each data folder; else None (SQLite)."""
    if not TEST_POSTGRES_URL:
        return None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    def url(database: str) -> str:
        return make_url(TEST_POSTGRES_URL).set(database=database).render_as_string(False)

    name = "wf_" + hashlib.sha1(str(Path(data_dir).resolve()).encode()).hexdigest()[:24]
    if name not in _created_databases:
        template = f"wf_template_{os.getpid()}"
        engine = create_engine(TEST_POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            if template not in _created_databases:  # migrated once, copied for each test
                drop_database(conn, template)
                conn.execute(text(f'CREATE DATABASE "{template}"'))
                from index_server.db.migrate import upgrade

                upgrade(url(template))
                _created_databases.add(template)
            drop_database(conn, name)
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        engine.dispose()
        _created_databases.add(name)
    return url(name)


@pytest.fixture(autouse=True, scope="session")
def _postgres_databases() -> Iterator[None]:
    """Point every Settings without a database URL at its own PostgreSQL database."""
    if not TEST_POSTGRES_URL:
        yield
        return
    original = Settings.resolved_database_url

    def resolved(self: Settings) -> str:
        return self.database_url or database_for(self.data_dir) or ""

    Settings.resolved_database_url = property(resolved)  # type: ignore[assignment,method-assign]
    yield
    Settings.resolved_database_url = original  # type: ignore[method-assign]
    from sqlalchemy import create_engine

    engine = create_engine(TEST_POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in _created_databases:
            drop_database(conn, name)
    engine.dispose()


def drop_database(conn: Connection, name: str, attempts: int = 20) -> None:
    """DROP DATABASE ... WITH (FORCE), again while it is refused: FORCE cannot end an
    autovacuum worker (it runs as the server's superuser), which soon ends by itself."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    for attempt in range(attempts):
        try:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_client_env(**extra: str) -> dict[str, str]:
    """The environment for pip/uv/twine: none of this machine's pip configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "TWINE_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
    )
    env.update(extra)
    return env


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {}, data_dir=tmp_path / "data", admin_token=ADMIN_TOKEN, upstream_urls=()
    )


@pytest.fixture
def services(settings: Settings) -> Services:
    svc = build_services(settings)
    yield svc
    svc.engine.dispose()


@pytest.fixture
def app(services: Services):  # type: ignore[no-untyped-def]
    return create_app(services=services)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def upload_token(services: Services) -> str:
    return create_token(services.engine, "tests", "upload")[1]


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    def index(self, platform: str) -> str:
        return f"{self.url}/{platform}/simple/"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "wheelfarm"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )

    def token(self, scope: str) -> str:
        return self.cli("token", "create", "--scope", scope).stdout.strip()


def server_env(data_dir: Path, **env_extra: str) -> dict[str, str]:
    """The environment of a test server on ``data_dir`` (its own database in PostgreSQL mode)."""
    env = {
        **os.environ,
        "WHEELFARM_DATA_DIR": str(data_dir),
        "WHEELFARM_ADMIN_TOKEN": ADMIN_TOKEN,
        "WHEELFARM_UPSTREAM_URL": "none",
        **env_extra,
    }
    database = database_for(data_dir)
    if database and "WHEELFARM_DATABASE_URL" not in env_extra:
        env["WHEELFARM_DATABASE_URL"] = database
    return env


def start_server(data_dir: Path, log_path: Path, **env_extra: str) -> LiveServer:
    port = free_port()
    env = server_env(data_dir, **env_extra)
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            str(BIN / "wheelfarm"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--threads",
            "4",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_answering(url + "/health", process, log_path, "server")
    return LiveServer(url, data_dir, process, env)


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], log_path: Path, what: str, seconds: float = 30
) -> None:
    """Poll ``url`` until it answers; fail with the process's log if it dies or never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not start: {log_path.read_text()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path / "server-data", tmp_path / "server.log")
    yield server
    stop_server(server)


# --- S3 (moto's server over HTTP, tests/s3_helpers.py) -------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    from tests.s3_helpers import start_moto, stop_moto  # it imports this module

    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    stop_moto(server)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 in this process (and the servers it starts) sees only the test credentials,
    never this machine's settings."""
    from tests.s3_helpers import AWS_ENV

    for name in list(os.environ):
        if name.startswith(("AWS_", "BOTO_")):
            monkeypatch.delenv(name)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
