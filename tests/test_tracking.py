"""Proactive builds against the local fake upstream: a tracked project's new release is
queued on every platform it has wheels for, within the upstream page TTL, with no client
asking. A live server (its tracker thread) and the real worker protocol for the first wheel."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ADMIN_TOKEN, BIN, LiveServer, clean_client_env, start_server, stop_server
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import PLATFORM, PY313_X86
from tests.upstream_server import FakeUpstream

TTL = 3  # seconds an upstream page is fresh


@contextmanager
def serving(
    tmp: Path, projects: tuple[str, ...], track_all: bool
) -> Iterator[tuple[LiveServer, FakeUpstream]]:
    """A live server (short upstream TTL) over a fake upstream with version 1.0 of each."""
    upstream = FakeUpstream(mode="json")
    for name in projects:
        upstream.add(make_sdist(tmp, name, "1.0"))
    server = start_server(
        tmp / "data",
        tmp / "server.log",
        WHEELFARM_UPSTREAM_URL=upstream.url,
        WHEELFARM_UPSTREAM_TTL=str(TTL),
        WHEELFARM_TRACK_BUILT_PROJECTS="1" if track_all else "0",
    )
    try:
        yield server, upstream
    finally:
        stop_server(server)
        upstream.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LiveServer, FakeUpstream]]:
    with serving(tmp_path, ("wf-news", "wf-quiet"), track_all=False) as found:
        yield found


def _api(server: LiveServer, method: str, path: str, token: str = ADMIN_TOKEN, **kw: Any) -> Any:
    response = requests.request(
        method, server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw
    )
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def build_first_wheel(server: LiveServer, tmp: Path, project: str, build_token: str) -> None:
    """Version 1.0 built for PLATFORM through the worker protocol, as a worker would."""
    body = {"project": project, "version": "1.0", "platforms": [PLATFORM]}
    _api(server, "POST", "/api/builds", json=body)
    job = _api(
        server,
        "POST",
        "/api/worker/claim",
        build_token,
        json={"worker": "w", "platforms": [PLATFORM]},
    )
    assert job["project"] == project
    folder = tmp / f"wheel-{project}"
    folder.mkdir()
    wheel = make_wheel(folder, project, "1.0", tag="cp311-cp311-linux_x86_64")
    with wheel.open("rb") as fh:
        _api(
            server,
            "POST",
            f"/api/worker/jobs/{job['id']}/wheels",
            build_token,
            data={"lease": job["lease"]},
            files={"content": (wheel.name, fh, "application/zip")},
        )
    finish = {"lease": job["lease"], "outcome": "succeeded", "wheels": [wheel.name]}
    _api(server, "POST", f"/api/worker/jobs/{job['id']}/finish", build_token, json=finish)


def jobs_of(server: LiveServer, project: str) -> list[dict[str, Any]]:
    return _api(server, "GET", f"/api/builds?project={project}")["builds"]  # type: ignore[no-any-return]


def test_new_release_of_a_tracked_project_is_built_without_a_client(
    served: tuple[LiveServer, FakeUpstream], tmp_path: Path
) -> None:
    server, upstream = served
    build_token = server.token("build")
    for project in ("wf-news", "wf-quiet"):
        build_first_wheel(server, tmp_path, project, build_token)
    # Tracked with the CLI: the versions upstream has now are the baseline.
    env = clean_client_env(WHEELFARM_SERVER_URL=server.url, WHEELFARM_TOKEN=ADMIN_TOKEN)
    done = subprocess.run(
        [str(BIN / "wheelfarm"), "track", "wf-news"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "wf-news: tracked; known versions: 1.0" in done.stdout
    listed = subprocess.run(
        [str(BIN / "wheelfarm"), "track"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert listed.strip() == f"wf-news: {PLATFORM}"

    # A new release appears upstream (and one of the untracked project too).
    upstream.add(make_sdist(tmp_path, "wf-news", "1.1"))
    upstream.add(make_sdist(tmp_path, "wf-quiet", "1.1"))
    appeared = time.monotonic()
    # Queued within the page TTL (plus a tracker round and a margin for a loaded machine).
    deadline = appeared + TTL + 1 + 10
    while not [j for j in jobs_of(server, "wf-news") if j["version"] == "1.1"]:
        assert time.monotonic() < deadline, jobs_of(server, "wf-news")
        time.sleep(0.2)
    waited = time.monotonic() - appeared
    (new,) = [j for j in jobs_of(server, "wf-news") if j["version"] == "1.1"]
    # On the platform it has wheels for, and only there; by the tracker, not a client.
    assert (new["platform"], new["source"], new["state"]) == (PLATFORM, "track", "queued")
    assert new["requested_by"] == "tracker"
    assert not [j for j in jobs_of(server, "wf-news") if j["platform"] == PY313_X86]
    print(f"new release queued {waited:.1f} s after it appeared (TTL {TTL} s)")
    # The untracked project's release waits for a client.
    time.sleep(TTL + 2)
    assert [j["version"] for j in jobs_of(server, "wf-quiet")] == ["1.0"]
    # Untracked: no more proactive builds.
    _api(server, "DELETE", "/api/tracked/wf-news")
    assert _api(server, "GET", "/api/tracked")["tracked"] == []


def test_every_built_project_is_tracked_with_the_setting(tmp_path: Path) -> None:
    with serving(tmp_path, ("wf-auto",), track_all=True) as (server, upstream):
        build_first_wheel(server, tmp_path, "wf-auto", server.token("build"))
        # The tracker takes the project's current versions as its baseline on its own.
        deadline = time.monotonic() + TTL + 15
        while not _api(server, "GET", "/api/tracked")["tracked"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        (tracked,) = _api(server, "GET", "/api/tracked")["tracked"]
        assert tracked["project"] == "wf-auto" and tracked["explicit"] is False
        assert tracked["versions"] == ["1.0"]
        assert [j["version"] for j in jobs_of(server, "wf-auto")] == ["1.0"]
        upstream.add(make_sdist(tmp_path, "wf-auto", "2.0"))
        deadline = time.monotonic() + TTL + 1 + 10
        while "2.0" not in [j["version"] for j in jobs_of(server, "wf-auto")]:
            assert time.monotonic() < deadline, json.dumps(jobs_of(server, "wf-auto"))
            time.sleep(0.2)
