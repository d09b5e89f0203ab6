"""Leftovers of killed servers: stale upload scratch folders and temporary blob files on disk,
open multipart uploads on S3 (moto's server, over HTTP) are removed, by ``wheelfarm serve``
at start and by ``wheelfarm cleanup``; fresh ones, blobs and what the index lists are kept."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from botocore.stub import Stubber
from flask.testing import FlaskClient

from index_server.config import Settings
from index_server.leftovers import Removed, remove_leftovers
from index_server.services import Services
from storage import blob_key
from storage.local import LocalStorage
from storage.s3 import S3Storage
from tests.conftest import ADMIN_TOKEN, BIN, start_server, stop_server
from tests.factory import make_wheel
from tests.http_helpers import (
    json_page,
    project_url,
    services_fixture,
    sha256_of,
    stored_blobs,
    upload_ok,
)
from tests.s3_helpers import (
    MotoServer,
    aws_env,
    keys_in,
    open_uploads,
)

HOUR = 3600.0
MiB = 1024 * 1024
# moto's server reports every multipart upload as initiated at this moment (a constant in its
# ListMultipartUploads response); S3 reports when the upload was started.
MOTO_INITIATED = datetime(2010, 11, 10, 20, 48, 33, tzinfo=UTC)
pytestmark = pytest.mark.usefixtures("aws")


def backdate(path: Path, seconds: float) -> Path:
    when = time.time() - seconds
    os.utime(path, (when, when))
    return path


def make_file(path: Path, data: bytes = b"partial", age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return backdate(path, age)


def make_scratch(data_dir: Path, name: str, age: float) -> Path:
    """An upload scratch folder as ``store_upload`` leaves it when killed: one saved file."""
    folder = data_dir / name
    make_file(folder / "upload", age=age)
    return backdate(folder, age)


def blob_dir(root: Path, sha256: str) -> Path:
    return (root / blob_key(sha256)).parent


def downloads(client: FlaskClient, project: str) -> dict[str, str]:
    """filename -> sha256 of the bytes each listed file (and its .metadata) downloads as,
    checked against the hashes the page gives."""
    got = {}
    for entry in json_page(client, project_url(project))["files"]:
        path = urlsplit(urljoin(f"http://x{project_url(project)}", entry["url"])).path
        response = client.get(path)
        assert response.status_code == 200, path
        got[entry["filename"]] = hashlib.sha256(response.data).hexdigest()
        assert got[entry["filename"]] == entry["hashes"]["sha256"]
        if entry.get("core-metadata"):
            metadata = client.get(path + ".metadata")
            assert metadata.status_code == 200, path
            assert hashlib.sha256(metadata.data).hexdigest() == entry["core-metadata"]["sha256"]
    return got


# --- local storage and the data dir ---------------------------------------------------------


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The conftest fixture, from a copy of a migrated database (see http_helpers)."""
    yield from services_fixture(settings)


def test_local_storage_removes_only_stale_temporaries(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "blobs")
    blobs = {hashlib.sha256(d).hexdigest(): d for d in (b"one", b"two")}
    for sha256, data in blobs.items():
        store.put(blob_key(sha256), io.BytesIO(data))
        backdate(store.root / blob_key(sha256), 10 * HOUR)  # old blobs are still blobs
    first, second = (blob_dir(store.root, sha256) for sha256 in blobs)
    stale = [
        make_file(first / ".tmp-dead1", age=2 * HOUR),
        make_file(second / ".tmp-dead2", age=2 * HOUR),
        make_file(store.root / "sha256" / ".tmp-dead3", age=2 * HOUR),
    ]
    fresh = make_file(first / ".tmp-writing", age=60)

    assert store.remove_stale_temporaries() == 3  # default cutoff: an hour
    assert not any(path.exists() for path in stale)
    assert fresh.exists()
    for sha256, data in blobs.items():
        with store.open(blob_key(sha256)) as fh:
            assert fh.read() == data
    assert store.remove_stale_temporaries(HOUR) == 0
    assert store.remove_stale_temporaries(0) == 1
    assert not fresh.exists()
    assert sorted(p.name for p in store.root.rglob("*") if p.is_file()) == sorted(blobs)


def test_stale_leftovers_go_and_the_index_is_untouched(
    settings: Settings,
    services: Services,
    client: FlaskClient,
    upload_token: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0")
    upload_ok(client, wheel, upload_token)
    before = downloads(client, "demo")
    assert before == {wheel.name: sha256_of(wheel)}
    blobs = stored_blobs(settings)
    root = settings.data_dir / "files"
    for blob in blobs:
        backdate(root / blob, 10 * HOUR)
    next_to_wheel = blob_dir(root, sha256_of(wheel))
    stale = [
        make_scratch(settings.data_dir, "upload-killed", 2 * HOUR),
        make_file(settings.data_dir / ".secret_key.4242.0123456789abcdef", age=2 * HOUR),
        make_file(next_to_wheel / ".tmp-killed", age=2 * HOUR),
    ]
    fresh = [
        make_scratch(settings.data_dir, "upload-running", 60),
        make_file(next_to_wheel / ".tmp-running", age=60),
    ]
    # An old folder that a slow upload is still being saved into is not stale.
    saving = make_scratch(settings.data_dir, "upload-saving", 2 * HOUR)
    make_file(saving / "upload", b"still arriving", age=5)

    with caplog.at_level(logging.INFO, logger="wheelfarm.leftovers"):
        removed = remove_leftovers(settings, storage=services.storage)

    assert removed == Removed(scratch=2, temporaries=1)
    (line,) = [r for r in caplog.records if r.name == "wheelfarm.leftovers"]
    assert (line.scratch, line.temporaries, line.older_than) == (2, 1, HOUR)  # type: ignore[attr-defined]
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in [*fresh, saving])
    assert (settings.data_dir / "secret_key").exists()
    assert stored_blobs(settings) == blobs | {str(fresh[1].relative_to(root))}
    assert downloads(client, "demo") == before


# --- S3 -------------------------------------------------------------------------------------


def report_real_initiation(store: S3Storage, initiated: dict[str, datetime]) -> None:
    """Make moto's listing say when each upload (by id) was started, as S3 does."""

    def fix(parsed: dict[str, Any], **_: Any) -> None:
        for upload in parsed.get("Uploads", []):
            if upload["Initiated"] == MOTO_INITIATED:
                upload["Initiated"] = initiated[upload["UploadId"]]

    store.client.meta.events.register("after-call.s3.ListMultipartUploads", fix)


def killed_put(moto: MotoServer, url: str, key: str, tmp_path: Path) -> str:
    """``S3Storage.put`` in a process SIGKILLed after two parts: the id of its open upload."""
    script = "import sys; from storage import open_storage; "
    script += "open_storage(sys.argv[1]).put(sys.argv[2], sys.stdin.buffer)"
    log = (tmp_path / "put.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", script, url, key],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=aws_env(),
    )
    assert process.stdin is not None
    try:
        process.stdin.write(b"x" * (11 * MiB))  # two 5 MiB parts, then it waits for more
        process.stdin.flush()
        bucket = urlsplit(url).netloc
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            uploads = open_uploads(moto, bucket)
            if uploads:
                parts = moto.client().list_parts(
                    Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
                )
                if len(parts.get("Parts", [])) == 2:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError(
                f"the put never sent two parts: {(tmp_path / 'put.log').read_text()}"
            )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdin.close()
    (upload,) = open_uploads(moto, bucket)
    return str(upload["UploadId"])


def test_s3_killed_upload_is_aborted_once_stale(moto: MotoServer, tmp_path: Path) -> None:
    bucket = moto.new_bucket()
    url = f"s3://{bucket}/blobs?endpoint_url={moto.endpoint}&part_size={5 * MiB}"
    store = S3Storage.from_url(url)
    kept = blob_key(hashlib.sha256(b"kept").hexdigest())
    store.put(kept, io.BytesIO(b"kept"))
    started = datetime.now(UTC)
    killed = killed_put(moto, url, blob_key("ab" * 32), tmp_path)
    outside = moto.client().create_multipart_upload(Bucket=bucket, Key="elsewhere/x")["UploadId"]
    report_real_initiation(store, {killed: started})

    assert keys_in(moto, bucket) == [f"blobs/{kept}"]  # the killed put shows nothing
    assert store.remove_stale_temporaries(HOUR) == 0  # started just now: may be running
    assert {u["UploadId"] for u in open_uploads(moto, bucket)} == {killed, outside}
    assert store.remove_stale_temporaries(0) == 1
    assert [u["UploadId"] for u in open_uploads(moto, bucket)] == [outside]  # not our prefix
    assert keys_in(moto, bucket) == [f"blobs/{kept}"]
    with store.open(kept) as fh:
        assert fh.read() == b"kept"


def test_s3_aborts_what_is_older_than_the_cutoff(moto: MotoServer) -> None:
    bucket = moto.new_bucket()
    store = S3Storage(bucket, "blobs", endpoint_url=moto.endpoint)
    client = moto.client()
    now = datetime.now(UTC)
    ages = {"old": timedelta(hours=2), "young": timedelta(minutes=10)}
    ids = {
        name: client.create_multipart_upload(Bucket=bucket, Key=f"blobs/{name}")["UploadId"]
        for name in ages
    }
    report_real_initiation(store, {ids[name]: now - age for name, age in ages.items()})

    assert store.remove_stale_temporaries() == 1  # the default cutoff: an hour
    assert [u["Key"] for u in open_uploads(moto, bucket)] == ["blobs/young"]


def test_s3_listing_is_followed_across_pages() -> None:
    """moto answers with one page whatever max-uploads says: S3's pages are stubbed here."""
    store = S3Storage("bucket", "blobs", endpoint_url="http://127.0.0.1:9")
    old, young = datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC)
    query = {"Bucket": "bucket", "Prefix": "blobs/"}
    with Stubber(store.client) as stub:
        stub.add_response(
            "list_multipart_uploads",
            {
                "IsTruncated": True,
                "NextKeyMarker": "blobs/a",
                "NextUploadIdMarker": "u1",
                "Uploads": [{"Key": "blobs/a", "UploadId": "u1", "Initiated": old}],
            },
            query,
        )
        stub.add_response(
            "list_multipart_uploads",
            {
                "IsTruncated": False,
                "Uploads": [
                    {"Key": "blobs/b", "UploadId": "u2", "Initiated": old},
                    {"Key": "blobs/c", "UploadId": "u3", "Initiated": young},
                ],
            },
            {**query, "KeyMarker": "blobs/a", "UploadIdMarker": "u1"},
        )
        stub.add_response(
            "abort_multipart_upload", {}, {"Bucket": "bucket", "Key": "blobs/a", "UploadId": "u1"}
        )
        # Completed by its writer after the listing: not counted, not an error.
        stub.add_client_error(
            "abort_multipart_upload",
            "NoSuchUpload",
            http_status_code=404,
            expected_params={"Bucket": "bucket", "Key": "blobs/b", "UploadId": "u2"},
        )
        assert store.remove_stale_temporaries() == 1
        stub.assert_no_pending_responses()


def test_cleanup_command_fails_when_s3_refuses(moto: MotoServer, tmp_path: Path) -> None:
    result = run_cleanup(tmp_path / "data", WHEELFARM_STORAGE_URL=missing_bucket_url(moto))
    assert result.returncode == 1
    assert "could not abort stale multipart uploads" in result.stderr


def test_serve_starts_when_s3_refuses_the_cleanup(moto: MotoServer, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = start_server(tmp_path / "data", log, WHEELFARM_STORAGE_URL=missing_bucket_url(moto))
    try:
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
    finally:
        stop_server(server)
    assert "could not remove stale leftovers" in log.read_text()


def missing_bucket_url(moto: MotoServer) -> str:
    return f"s3://no-such-bucket/blobs?endpoint_url={moto.endpoint}"


# --- the command and the server -------------------------------------------------------------


def run_cleanup(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "wheelfarm"), "cleanup", *args],
        env={**os.environ, "WHEELFARM_DATA_DIR": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cleanup_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    blobs = LocalStorage(data_dir / "files")
    sha256 = hashlib.sha256(b"blob").hexdigest()
    blobs.put(blob_key(sha256), io.BytesIO(b"blob"))
    stale_scratch = make_scratch(data_dir, "upload-killed", 2 * HOUR)
    stale_temp = make_file(blob_dir(blobs.root, sha256) / ".tmp-killed", age=2 * HOUR)
    young_scratch = make_scratch(data_dir, "upload-young", 20 * 60)
    young_temp = make_file(blob_dir(blobs.root, sha256) / ".tmp-young", age=20 * 60)

    result = run_cleanup(data_dir)
    assert result.returncode == 0, result.stderr
    assert "removed stale leftovers scratch=1 temporaries=1 older_than=3600.0" in result.stderr
    assert not stale_scratch.exists() and not stale_temp.exists()
    assert young_scratch.exists() and young_temp.exists()

    result = run_cleanup(data_dir, "--older-than", "600")
    assert result.returncode == 0, result.stderr
    assert "scratch=1 temporaries=1 older_than=600.0" in result.stderr
    assert not young_scratch.exists() and not young_temp.exists()
    with blobs.open(blob_key(sha256)) as fh:
        assert fh.read() == b"blob"

    refused = run_cleanup(data_dir, "--older-than", "-1")
    assert refused.returncode == 2
    assert "--older-than" in refused.stderr


def test_serve_start_removes_stale_leftovers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    wheel = make_wheel(tmp_path, "demo", "1.0")
    server = start_server(data_dir, tmp_path / "first.log")
    try:
        upload = requests.post(
            f"{server.url}/debian-12-py3.11-x86_64/legacy/",
            data={":action": "file_upload", "sha256_digest": sha256_of(wheel)},
            files={"content": (wheel.name, wheel.read_bytes())},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert upload.status_code == 201, upload.text
    finally:
        stop_server(server)
    next_to_wheel = blob_dir(data_dir / "files", sha256_of(wheel))
    stale = [
        make_scratch(data_dir, "upload-killed", 2 * HOUR),
        make_file(next_to_wheel / ".tmp-killed", age=2 * HOUR),
    ]
    fresh = [
        make_scratch(data_dir, "upload-running", 60),
        make_file(next_to_wheel / ".tmp-running", age=60),
    ]

    log = tmp_path / "second.log"
    server = start_server(data_dir, log)
    try:
        assert not any(path.exists() for path in stale)
        assert all(path.exists() for path in fresh)
        page = requests.get(
            server.url + project_url("demo"),
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            timeout=10,
        ).json()
        (entry,) = page["files"]
        data = requests.get(urljoin(server.url + project_url("demo"), entry["url"]), timeout=10)
        assert hashlib.sha256(data.content).hexdigest() == sha256_of(wheel)
    finally:
        stop_server(server)
    assert "removed stale leftovers scratch=1 temporaries=1" in log.read_text()
