"""A platform's life: backfill of a new platform, stale wheels after an image change and
their rebuild, retirement. The worker side speaks the real worker protocol over HTTP."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from index_server.app import create_app
from index_server.auth import create_token
from index_server.config import Settings
from index_server.services import Services
from tests.factory import make_wheel
from tests.http_helpers import PLATFORM, PY313_X86, admin_headers, bearer, services_fixture
from tests.http_helpers import upload_ok as upload_file

NEW = PY313_X86  # the platform added later


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    yield from services_fixture(settings)


@dataclasses.dataclass
class Farm:
    client: FlaskClient
    services: Services
    tmp: Path
    upload_token: str
    build_token: str

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.open(path, method=method, headers=admin_headers(), **kwargs)
        assert response.status_code < 300, response.get_data(as_text=True)
        return response.get_json()

    def upload(self, name: str, version: str, tag: str, platform: str = PLATFORM) -> str:
        wheel = make_wheel(self.tmp, name, version, tag=tag)
        upload_file(self.client, wheel, self.upload_token, platform)
        return wheel.name

    def claim(self, platform: str) -> dict[str, Any] | None:
        response = self.client.post(
            "/api/worker/claim",
            json={"worker": f"w-{platform}", "platforms": [platform]},
            headers=bearer(self.build_token),
        )
        assert response.status_code in (200, 204), response.get_data(as_text=True)
        return response.get_json() if response.status_code == 200 else None

    def build(self, job: dict[str, Any], image: str, marker: str = "") -> dict[str, Any]:
        """Upload the job's wheel (content varied by ``marker``) and finish on ``image``."""
        tag = "cp313-cp313-linux_x86_64" if job["platform"] == NEW else "cp311-cp311-linux_x86_64"
        folder = self.tmp / f"built-{job['id']}-{marker}"
        folder.mkdir()
        module = {f"{job['project'].replace('-', '_')}/__init__.py": f"IMAGE = {marker!r}\n"}
        wheel = make_wheel(folder, job["project"], job["version"], tag=tag, modules=module)
        with wheel.open("rb") as fh:
            stored = self.client.post(
                f"/api/worker/jobs/{job['id']}/wheels",
                data={"lease": job["lease"], "content": (fh, wheel.name)},
                headers=bearer(self.build_token),
                content_type="multipart/form-data",
            )
        assert stored.status_code in (200, 201), stored.get_data(as_text=True)
        finished = self.client.post(
            f"/api/worker/jobs/{job['id']}/finish",
            json={
                "lease": job["lease"],
                "outcome": "succeeded",
                "wheels": [wheel.name],
                "image_id": image,
                "platform_image_id": image,
            },
            headers=bearer(self.build_token),
        )
        assert finished.status_code == 200, finished.get_data(as_text=True)
        return stored.get_json()  # type: ignore[no-any-return]

    def queue_and_claim(self, project: str) -> dict[str, Any]:
        body = {"project": project, "version": "1.0", "platforms": [PLATFORM]}
        self.admin("POST", "/api/builds", json=body)
        job = self.claim(PLATFORM)
        assert job is not None and job["project"] == project
        return job

    def status(self, platform: str) -> dict[str, Any]:
        return self.admin("GET", f"/api/platforms/{platform}")  # type: ignore[no-any-return]


def _farm(services: Services, tmp: Path) -> Farm:
    app: Flask = create_app(services=services)
    return Farm(
        app.test_client(),
        services,
        tmp,
        # Token names are unique; a test may make a second farm on the same services.
        create_token(services.engine, f"up-{secrets.token_hex(4)}", "upload")[1],
        create_token(services.engine, f"builder-{secrets.token_hex(4)}", "build")[1],
    )


@pytest.fixture
def farm(services: Services, tmp_path: Path) -> Farm:
    return _farm(services, tmp_path)


def test_backfill_builds_what_other_platforms_have_most_downloaded_first(farm: Farm) -> None:
    farm.upload("alpha", "1.0", "cp311-cp311-linux_x86_64")
    beta = farm.upload("beta", "2.0", "cp311-cp311-linux_x86_64")
    farm.upload("beta", "1.0", "cp311-cp311-linux_x86_64")
    farm.upload("gamma", "1.0", "py3-none-any")  # pure: the new platform serves it already
    farm.upload("delta", "1.0", "cp313-cp313-linux_x86_64", platform=NEW)  # already there
    farm.upload("delta", "1.0", "cp311-cp311-linux_x86_64")
    # beta is downloaded more than alpha (counted in memory, added to the database in batches)
    (record,) = [
        f for f in farm.admin("GET", "/api/projects/beta")["files"] if f["filename"] == beta
    ]
    for _ in range(3):
        url = f"/files/{record['sha256']}/{beta}"
        assert farm.client.get(url, headers=admin_headers()).status_code == 200
    farm.services.downloads.flush(farm.services)

    done = farm.admin("POST", f"/api/platforms/{NEW}/backfill")
    assert [(q["project"], q["version"]) for q in done["queued"]] == [
        ("beta", "2.0"),
        ("beta", "1.0"),
        ("alpha", "1.0"),
    ]
    assert done["progress"]["total"] == 3 and done["progress"]["done"] == 0
    # Again: nothing new to queue (a job per project/version/platform, once).
    assert farm.admin("POST", f"/api/platforms/{NEW}/backfill")["queued"] == []
    # The backfill's jobs are the new platform's, in that order; progress follows them.
    job = farm.claim(NEW)
    assert job is not None and (job["project"], job["version"]) == ("beta", "2.0")
    assert farm.claim(PLATFORM) is None  # nothing was queued for the old platform
    farm.build(job, "sha256:image-1")
    progress = farm.status(NEW)["backfill"]
    assert (progress["done"], progress["total"]) == (1, 3)
    assert progress["states"] == {"queued": 2, "succeeded": 1}
    assert progress["backfilled_at"]


def test_image_change_marks_wheels_stale_and_rebuilds_them(farm: Farm) -> None:
    first = farm.queue_and_claim("one")
    original = farm.build(first, "sha256:image-a", "a")
    assert farm.status(PLATFORM)["image_id"] == "sha256:image-a"
    assert farm.status(PLATFORM)["stale_wheels"] == 0
    # A worker reports a new image with its next build: the first wheel is now stale.
    farm.build(farm.queue_and_claim("two"), "sha256:image-b", "b")
    status = farm.status(PLATFORM)
    assert status["image_id"] == "sha256:image-b" and status["stale_wheels"] == 1
    # A worker still on image A (a rollout under way) does not turn the clock back.
    farm.build(farm.queue_and_claim("three"), "sha256:image-a", "a")
    status = farm.status(PLATFORM)
    assert status["image_id"] == "sha256:image-b" and status["stale_wheels"] == 2
    # Rebuilt on request: the new wheel (same name) replaces the one from image A.
    queued = farm.admin("POST", f"/api/platforms/{PLATFORM}/rebuild-stale")["queued"]
    assert queued == [first["id"], first["id"] + 2]
    again = farm.claim(PLATFORM)
    assert again is not None and again["id"] == first["id"]
    job = farm.admin("GET", f"/api/builds/{first['id']}")
    assert job["source"] == "image-rebuild"
    # Until the rebuild lands, the old wheel is still served.
    files = farm.admin("GET", "/api/projects/one")["files"]
    assert [f["sha256"] for f in files] == [original["sha256"]]
    rebuilt = farm.build(again, "sha256:image-b", "b2")
    files = farm.admin("GET", "/api/projects/one")["files"]
    assert [f["sha256"] for f in files] == [rebuilt["sha256"]] != [original["sha256"]]
    farm.build(farm.claim(PLATFORM), "sha256:image-b", "b3")  # type: ignore[arg-type]
    assert farm.status(PLATFORM)["stale_wheels"] == 0


def test_image_change_rebuilds_at_once_with_the_setting(settings: Settings, tmp_path: Path) -> None:
    auto = dataclasses.replace(settings, rebuild_on_image_change=True)
    services = next(services_fixture(auto))
    try:
        farm = _farm(services, tmp_path)
        first = farm.queue_and_claim("one")
        farm.build(first, "sha256:image-a", "a")
        farm.build(farm.queue_and_claim("two"), "sha256:image-b", "b")
        job = farm.admin("GET", f"/api/builds/{first['id']}")
        assert (job["state"], job["source"]) == ("queued", "image-rebuild")
    finally:
        services.engine.dispose()


def test_retired_platform_serves_its_files_until_deleted(
    settings: Settings, tmp_path: Path
) -> None:
    shipped = Path(__file__).resolve().parent.parent / "platforms"
    folder = tmp_path / "platforms"
    folder.mkdir()
    for name in (PLATFORM, NEW):
        (folder / f"{name}.toml").write_text((shipped / f"{name}.toml").read_text())
    live = dataclasses.replace(settings, platforms_dir=folder)
    services = next(services_fixture(live))
    farm = _farm(services, tmp_path)
    wheel = farm.upload("old", "1.0", "cp313-cp313-linux_x86_64", platform=NEW)
    farm.upload("old", "1.0", "cp311-cp311-linux_x86_64")
    refused = farm.client.delete(f"/api/platforms/{NEW}/files", headers=admin_headers())
    assert refused.status_code == 409 and "not retired" in refused.get_json()["error"]
    services.engine.dispose()

    (folder / f"{NEW}.toml").write_text("retired = true\n" + (shipped / f"{NEW}.toml").read_text())
    services = next(services_fixture(live))
    try:
        farm = _farm(services, tmp_path)
        listed = {p["name"]: p for p in farm.admin("GET", "/api/platforms")["platforms"]}
        assert listed[NEW]["retired"] is True and listed[PLATFORM]["retired"] is False
        # Readable: its page and its file.
        page = farm.client.get(f"/{NEW}/simple/old/", headers=admin_headers())
        assert page.status_code == 200 and wheel in page.get_data(as_text=True)
        # Nothing new: no requests, no backfill, no claims.
        body = {"project": "old", "version": "2.0", "platforms": [NEW]}
        refused = farm.client.post("/api/builds", json=body, headers=admin_headers())
        assert refused.status_code == 400 and "retired" in refused.get_json()["error"]
        refused = farm.client.post(f"/api/platforms/{NEW}/backfill", headers=admin_headers())
        assert refused.status_code == 409
        assert farm.claim(NEW) is None
        # Deleted: gone from its index; the other platform keeps its own wheel.
        deleted = farm.admin("DELETE", f"/api/platforms/{NEW}/files")
        assert deleted["deleted"] == [wheel]
        page = farm.client.get(f"/{NEW}/simple/old/", headers=admin_headers())
        assert wheel not in page.get_data(as_text=True)
        other = farm.client.get(f"/{PLATFORM}/simple/old/", headers=admin_headers())
        assert "old-1.0-cp311-cp311-linux_x86_64.whl" in other.get_data(as_text=True)
    finally:
        services.engine.dispose()
