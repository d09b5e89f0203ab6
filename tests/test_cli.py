"""The ``wheelfarm`` command line, run in-process with click's CliRunner (and once for real)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from packaging import tags

from client.cli import main
from index_server.auth import authenticate, create_token
from index_server.config import Settings
from index_server.services import build_services
from storage import blob_key
from tests.conftest import ADMIN_TOKEN, BIN, clean_client_env, sqlite_only
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import (
    ALL_PLATFORMS,
    PLATFORM,
    app_with,
    json_page,
    project_url,
    sha256_of,
    upload_ok,
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "cli-data"


@pytest.fixture
def run(data_dir: Path):  # type: ignore[no-untyped-def]
    """``run(*args, input=None, env=None)``: the CLI with WHEELFARM_DATA_DIR set."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        base = {
            "WHEELFARM_DATA_DIR": str(data_dir),
            "WHEELFARM_UPSTREAM_URL": "none",
            "WHEELFARM_ADMIN_TOKEN": None,
            "WHEELFARM_DATABASE_URL": None,
            "WHEELFARM_STORAGE_URL": None,
            "WHEELFARM_PLATFORMS_DIR": None,
            "WHEELFARM_READ_REQUIRES_TOKEN": None,
            "WHEELFARM_MAX_UPLOAD_BYTES": None,
            "WHEELFARM_PAGE_MAX_AGE": None,
        }
        return runner.invoke(main, list(args), input=input, env={**base, **(env or {})})

    return invoke


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _settings(data_dir: Path) -> Settings:
    return Settings.from_env({}, data_dir=data_dir, admin_token=ADMIN_TOKEN, upstream_urls=())


def _populate(data_dir: Path, tmp_path: Path) -> dict[str, int]:
    """Upload a wheel and an sdist through the HTTP API; return their file ids."""
    with app_with(_settings(data_dir)) as (app, svc):
        client = app.test_client()
        token = create_token(svc.engine, "up", "upload")[1]
        wheel = make_wheel(tmp_path, "Demo.Pkg", "1.0")
        sdist = make_sdist(tmp_path, "Demo.Pkg", "1.0")
        upload_ok(client, wheel, token)
        upload_ok(client, sdist, token)
        files = client.get(
            "/api/projects/demo-pkg", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ).get_json()["files"]
    return {f["filename"]: f["id"] for f in files}


@sqlite_only
def test_db_upgrade(run, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    out = _ok(run("db", "upgrade"))
    assert re.search(r"database at revision \w+", out)
    assert "None" not in out
    with sqlite3.connect(data_dir / "wheelfarm.sqlite3") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"projects", "files", "tokens", "audit_events", "alembic_version"} <= tables
    assert _ok(run("db", "upgrade")) == out  # idempotent


def test_token_create_list_revoke(run, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    secret = _ok(run("token", "create", "--scope", "upload", "--name", "ci-bot")).strip()
    assert re.fullmatch(r"wf_[A-Za-z0-9_\-]{43}", secret)
    svc = build_services(_settings(data_dir))
    try:
        who = authenticate(svc.engine, secret, None)
        assert who is not None and who.scope == "upload" and who.name == "token:ci-bot"
        listing = _ok(run("token", "list"))
        (line,) = listing.splitlines()
        token_id = int(line.split()[0])
        assert "upload" in line and "active" in line and "ci-bot" in line
        assert secret[:10] in line and secret not in listing
        assert _ok(run("token", "revoke", str(token_id))) == f"revoked token {token_id}\n"
        assert "revoked" in _ok(run("token", "list"))
        assert authenticate(svc.engine, secret, None) is None
    finally:
        svc.engine.dispose()
    again = run("token", "revoke", str(token_id))
    assert again.exit_code != 0
    assert f"no active token with id {token_id}" in again.output


def test_token_create_bad_scope(run) -> None:  # type: ignore[no-untyped-def]
    result = run("token", "create", "--scope", "root")
    assert result.exit_code == 2
    assert "root" in result.output


def test_projects_and_files(run, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = _populate(data_dir, tmp_path)
    assert _ok(run("projects")).strip() == "Demo.Pkg  (2 files)"
    listing = _ok(run("files", "Demo_Pkg"))
    for filename, file_id in ids.items():
        assert re.search(rf"^\s*{file_id}\s+\*\s+{re.escape(filename)}$", listing, re.M), listing
    data = json.loads(_ok(run("files", "demo-pkg", "--json")))
    assert {f["filename"]: f["id"] for f in data} == ids
    assert _ok(run("files", "nothing")) == ""


def test_yank_unyank_delete(run, data_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = _populate(data_dir, tmp_path)
    digests = {p.name: sha256_of(p) for p in tmp_path.iterdir() if p.name in ids}
    wheel_name = next(n for n in ids if n.endswith(".whl"))
    sdist_name = next(n for n in ids if n.endswith(".tar.gz"))
    wheel_id = ids[wheel_name]
    settings = _settings(data_dir)

    def page_entry() -> dict | None:
        with app_with(settings) as (app, _svc):
            files = json_page(app.test_client(), project_url("demo-pkg"))["files"]
        return next((f for f in files if f["filename"] == wheel_name), None)

    assert _ok(run("yank", str(wheel_id), "--reason", "broken build")) == f"yank: {wheel_name}\n"
    assert page_entry()["yanked"] == "broken build"  # type: ignore[index]
    assert "[yanked: broken build]" in _ok(run("files", "demo-pkg"))
    assert _ok(run("unyank", str(wheel_id))) == f"unyank: {wheel_name}\n"
    assert page_entry()["yanked"] is False  # type: ignore[index]

    refused = run("delete", str(wheel_id), input="n\n")
    assert refused.exit_code != 0
    assert page_entry() is not None
    assert _ok(run("delete", str(wheel_id), "--yes")) == f"delete: {wheel_name}\n"
    assert page_entry() is None
    assert not (data_dir / "files" / blob_key(digests[wheel_name])).exists()
    assert (data_dir / "files" / blob_key(digests[sdist_name])).exists()
    missing = run("yank", str(wheel_id))
    assert missing.exit_code == 1
    assert f"no file with id {wheel_id}" in missing.output

    with app_with(settings) as (app, _svc):
        events = (
            app.test_client()
            .get("/api/events", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            .get_json()["events"]
        )
    assert [(e["action"], e["actor"]) for e in events[:3]] == [
        ("delete", "cli"),
        ("unyank", "cli"),
        ("yank", "cli"),
    ]


def test_platform_list(run) -> None:  # type: ignore[no-untyped-def]
    lines = _ok(run("platform", "list")).splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(ALL_PLATFORMS)
    (debian,) = [line for line in lines if line.startswith(PLATFORM)]
    assert "CPython 3.11" in debian and "glibc 2.36" in debian
    assert debian.endswith(f"best tag {next(iter(tags.sys_tags()))}")
    (arm,) = [line for line in lines if line.startswith("debian-12-py3.11-aarch64")]
    assert arm.endswith("best tag cp311-cp311-linux_aarch64, emulated")


def test_env_database_and_storage_urls(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "elsewhere" / "index.db"
    db.parent.mkdir()
    store = tmp_path / "blobs"
    env = {"WHEELFARM_DATABASE_URL": f"sqlite:///{db}", "WHEELFARM_STORAGE_URL": store.as_uri()}
    _ok(run("db", "upgrade", env=env))
    assert db.exists()
    _ok(run("token", "create", "--scope", "read", env=env))
    assert "read" in _ok(run("token", "list", env=env))
    assert _ok(run("token", "list")) == ""  # the default database (in the data dir) has none


def test_env_platforms_dir(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    custom = tmp_path / "platforms"
    custom.mkdir()
    source = Path(__file__).resolve().parents[1] / "platforms" / f"{PLATFORM}.toml"
    (custom / f"{PLATFORM}.toml").write_text(source.read_text())
    out = _ok(run("platform", "list", env={"WHEELFARM_PLATFORMS_DIR": str(custom)}))
    assert [line.split()[0] for line in out.splitlines()] == [PLATFORM]


def test_env_settings_reach_the_server_settings(  # type: ignore[no-untyped-def]
    run, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group turns WHEELFARM_* variables into the Settings every command uses."""
    from index_server import cli

    seen: list[Settings] = []
    original = cli._settings

    def spy(ctx):  # type: ignore[no-untyped-def]
        seen.append(original(ctx))
        return seen[-1]

    monkeypatch.setattr(cli, "_settings", spy)
    env = {
        "WHEELFARM_ADMIN_TOKEN": "wf_from-env",
        "WHEELFARM_READ_REQUIRES_TOKEN": "true",
        "WHEELFARM_MAX_UPLOAD_BYTES": "1234",
        "WHEELFARM_PAGE_MAX_AGE": "17",
        "WHEELFARM_UPSTREAM_URL": "http://127.0.0.1:9/simple",
    }
    _ok(run("projects", env=env))
    (settings,) = seen
    assert settings.data_dir == data_dir
    assert settings.admin_token == "wf_from-env"
    assert settings.read_requires_token is True
    assert settings.max_upload_bytes == 1234
    assert settings.page_max_age == 17
    assert settings.upstream_urls == ("http://127.0.0.1:9/simple/",)


@sqlite_only
def test_console_script(data_dir: Path, tmp_path: Path) -> None:
    """The installed ``wheelfarm`` entry point, with configuration only from the environment."""
    env = clean_client_env(WHEELFARM_DATA_DIR=str(data_dir))
    done = subprocess.run(
        [str(BIN / "wheelfarm"), "token", "create", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    secret = done.stdout.strip()
    assert (data_dir / "wheelfarm.sqlite3").exists()
    assert not (tmp_path / "wheelfarm-data").exists()  # the default was not used
    svc = build_services(_settings(data_dir))
    try:
        who = authenticate(svc.engine, secret, None)
        assert who is not None and who.scope == "admin"
    finally:
        svc.engine.dispose()


def test_the_root_command_lists_every_server_command() -> None:
    """The client names the server's commands without importing them (client/cli.py)."""
    from client import cli as client_cli
    from index_server import cli as server_cli

    assert sorted(server_cli.COMMANDS) == list(client_cli.SERVER_COMMANDS)
    assert client_cli.missing_server_dependencies() == []  # the test venv has wheelfarm[server]
    assert client_cli.server_command("serve") is server_cli.COMMANDS["serve"]


def test_missing_server_dependencies_reads_the_server_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from client.cli import missing_server_dependencies

    info = tmp_path / "fake_farm-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-farm\nVersion: 1.0\n"
        "Requires-Dist: click>=8\n"
        'Requires-Dist: no-such-server-part>=1; extra == "server"\n'
        'Requires-Dist: click>=8; extra == "server"\n'
        'Requires-Dist: no-such-test-tool; extra == "test"\n'
        "Provides-Extra: server\nProvides-Extra: test\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert missing_server_dependencies("fake-farm") == ["no-such-server-part"]
    assert missing_server_dependencies("not-installed-at-all") == []


def test_module_entry_point_runs_the_whole_command(tmp_path: Path) -> None:
    """``python -m client.cli`` (as ``wheelfarm demo`` starts its server and worker)."""
    done = subprocess.run(
        [str(BIN / "python"), "-m", "client.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert done.stdout.startswith("Usage: python -m client.cli serve [OPTIONS]")
