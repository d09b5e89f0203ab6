"""A builder farm for tests: a live server, a local upstream, and real Podman workers.

Used by ``tests/test_farm.py`` (builds that work, or fail honestly) and
``tests/test_build_sandbox.py`` (builds that misbehave on purpose).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests import builder_helpers as bh
from tests.conftest import ADMIN_TOKEN, BIN, LiveServer, start_server, stop_server
from tests.upstream_server import FakeUpstream

PLATFORM = "debian-12-py3.11-x86_64"
SHIPPED_PLATFORM = Path(__file__).resolve().parent.parent / "platforms" / f"{PLATFORM}.toml"


@dataclass
class Farm:
    server: LiveServer
    upstream: FakeUpstream
    platforms_dir: Path
    tools_index: str
    build_token: str
    logs: Path

    def api(self, method: str, path: str, body: object | None = None) -> dict:
        request = urllib.request.Request(
            self.server.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def request(self, project: str, version: str = "1.0", platform: str = PLATFORM) -> int:
        body = {"project": project, "version": version, "platforms": [platform]}
        (outcome,) = self.api("POST", "/api/builds", body)["requests"]
        assert outcome["outcome"] == "queued", outcome
        return int(outcome["job_id"])

    def worker(
        self,
        name: str,
        *extra: str,
        env: Mapping[str, str] | None = None,
        platform: str = PLATFORM,
    ) -> subprocess.Popen[bytes]:
        env = {
            **self.server.env,
            "WHEELFARM_PLATFORMS_DIR": str(self.platforms_dir),
            "WHEELFARM_TOOLS_INDEX_URL": self.tools_index,
            **(env or {}),
        }
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            [
                str(BIN / "wheelfarm"),
                "worker",
                "--server",
                self.server.url,
                "--token",
                self.build_token,
                "--runner",
                "podman",
                "--platform",
                platform,
                "--poll",
                "0.3",
                "--name",
                name,
                *extra,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.logs,  # the worker's own folder, not the checkout
        )

    def job(self, job_id: int) -> dict:
        return self.api("GET", f"/api/builds/{job_id}")

    def wait(self, job_id: int, states: tuple[str, ...], seconds: float = 240) -> dict:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} not {states} in {seconds} s: {self.job(job_id)}")


def platform_with_limits(folder: Path, build: Mapping[str, object], name: str = PLATFORM) -> Path:
    """A shipped platform with its ``[build]`` values replaced (e.g. a short timeout)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = (SHIPPED_PLATFORM.parent / f"{name}.toml").read_text().splitlines()
    table = lines.index("[build]")
    kept = [line for line in lines[table + 1 :] if line.partition("=")[0].strip() not in build]
    values = [f"{key} = {json.dumps(value)}" for key, value in build.items()]
    text = "\n".join(lines[: table + 1] + values + kept) + "\n"
    (folder / f"{name}.toml").write_text(text)
    return folder


@contextmanager
def running_farm(
    tmp: Path,
    sdists: Iterable[Path],
    build: Mapping[str, object] | Mapping[str, Mapping[str, object]],
    lease_seconds: int = 4,
    platforms: Iterable[str] = (PLATFORM,),
    **server_env: str,
) -> Iterator[Farm]:
    """A server whose upstream holds ``sdists`` and the build tools, on platforms with
    the given ``[build]`` limits (one table for all, or one per platform name)."""
    bh.require_podman()
    tools = bh.shared_local_index()
    upstream = FakeUpstream(mode="json")
    for wheel in sorted(bh.download_index_wheels().glob("*.whl")):
        upstream.add(wheel)  # build dependencies, served through the platform's index
    for sdist in sdists:
        upstream.add(sdist)
    platforms_dir = tmp / "platforms"
    per_platform = bool(build) and all(isinstance(v, Mapping) for v in build.values())
    for name in platforms:
        limits = build.get(name, {}) if per_platform else build
        platform_with_limits(platforms_dir, limits, name)  # type: ignore[arg-type]
    server = start_server(
        tmp / "data",
        tmp / "server.log",
        WHEELFARM_UPSTREAM_URL=upstream.url,
        WHEELFARM_PLATFORMS_DIR=str(platforms_dir),
        WHEELFARM_BUILD_LEASE_SECONDS=str(lease_seconds),
        **server_env,
    )
    logs = tmp / "logs"
    logs.mkdir()
    try:
        yield Farm(server, upstream, platforms_dir, tools.url, server.token("build"), logs)
    finally:
        stop_server(server)
        upstream.close()


def running_containers() -> str:
    """The commands of the containers running now (to tell that a build's is gone)."""
    return subprocess.run(
        ["podman", "ps", "--no-trunc", "--format", "{{.Command}}"],
        capture_output=True,
        text=True,
    ).stdout
