"""S3Storage against a real S3 endpoint (moto's standalone server, over HTTP), and the index
server storing its files there: uploads, streamed downloads with ranges, presigned redirects."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.http import parse_options_header

from index_server.app import create_app
from index_server.config import Settings
from index_server.services import build_services
from storage import StorageError, blob_key, open_storage
from storage.s3 import S3Storage
from tests.conftest import ADMIN_TOKEN, start_server, stop_server
from tests.factory import make_wheel
from tests.s3_helpers import (
    MotoServer,
    aws_env,
    keys_in,
    logged_statuses,
    open_uploads,
)

PLATFORM = "debian-12-py3.11-x86_64"
MiB = 1024 * 1024
KEY = blob_key("ab" * 32)
pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return moto.new_bucket()


def s3_url(moto: MotoServer, bucket: str, prefix: str = "blobs/v1", **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"endpoint_url": moto.endpoint, **options}.items())
    return f"s3://{bucket}/{prefix}?{query}"


class Exploding(io.RawIOBase):
    """A stream that yields ``good`` bytes, then fails as a dropped client connection would
    (calling ``before_failing`` first, to look at the bucket while the upload is open)."""

    def __init__(self, good: int, before_failing: Callable[[], None] = lambda: None) -> None:
        self.left = good
        self.before_failing = before_failing

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            self.before_failing()
            raise ConnectionResetError("client went away")
        count = min(len(buffer), self.left)
        buffer[:count] = b"x" * count
        self.left -= count
        return count


# --- the backend ------------------------------------------------------------------------------


def test_put_open_exists_size_delete(moto: MotoServer, bucket: str) -> None:
    store = open_storage(s3_url(moto, bucket))
    assert isinstance(store, S3Storage)
    assert not store.exists(KEY)
    assert store.put(KEY, io.BytesIO(b"hello world")) == 11
    assert keys_in(moto, bucket) == [f"blobs/v1/{KEY}"]
    assert store.exists(KEY)
    assert store.size(KEY) == 11
    with store.open(KEY) as fh:
        assert fh.read() == b"hello world"
    assert store.local_path(KEY) is None
    assert store.url(KEY, "x-1.0-py3-none-any.whl") is None  # serve=stream is the default
    store.delete(KEY)
    assert not store.exists(KEY)
    assert keys_in(moto, bucket) == []
    store.delete(KEY)  # deleting an absent blob is not an error
    with pytest.raises(FileNotFoundError):
        store.open(KEY)
    with pytest.raises(FileNotFoundError):
        store.size(KEY)
    with pytest.raises(ValueError):
        store.put("../escape", io.BytesIO(b"x"))


def test_no_prefix_and_empty_blob(moto: MotoServer, bucket: str) -> None:
    store = open_storage(f"s3://{bucket}?endpoint_url={moto.endpoint}")
    assert store.put(KEY, io.BytesIO(b"")) == 0
    assert keys_in(moto, bucket) == [KEY]
    assert store.size(KEY) == 0
    with store.open(KEY) as fh:
        assert fh.read() == b""


def test_endpoint_and_region_from_the_usual_aws_environment(
    moto: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # boto3 itself reads AWS_ENDPOINT_URL_S3 (then AWS_ENDPOINT_URL): no option needed.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.endpoint)
    store = open_storage(f"s3://{bucket}/env")
    store.put(KEY, io.BytesIO(b"via env"))
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    with open_storage(f"s3://{bucket}/env").open(KEY) as fh:
        assert fh.read() == b"via env"
    assert keys_in(moto, bucket) == [f"env/{KEY}"]


def test_url_options_are_checked(moto: MotoServer) -> None:
    store = S3Storage.from_url(
        f"s3://bkt/a/b/?endpoint_url={moto.endpoint}&region=eu-west-1&serve=redirect"
        "&expires=60&part_size=6291456&addressing_style=path"
    )
    assert (store.bucket, store.prefix, store.serve, store.expires) == (
        "bkt",
        "a/b",
        "redirect",
        60,
    )
    assert store.transfer.multipart_chunksize == 6 * MiB
    assert store.client.meta.region_name == "eu-west-1"
    for bad in (
        "s3:///prefix",
        "s3://bkt/p?serve=proxy",
        "s3://bkt/p?part_size=1024",
        "s3://bkt/p?expires=soon",
        "s3://bkt/p?endpoint=http://x",
        "s3://bkt/p?serve=stream&serve=redirect",
        "s3://bkt/../p",
    ):
        with pytest.raises(ValueError):
            open_storage(bad)


def test_large_put_is_multipart(moto: MotoServer, bucket: str) -> None:
    store = open_storage(s3_url(moto, bucket, part_size=5 * MiB))
    data = os.urandom(20 * MiB)
    assert store.put(KEY, io.BytesIO(data)) == len(data)
    head = moto.client().head_object(Bucket=bucket, Key=f"blobs/v1/{KEY}")
    assert head["ETag"].strip('"').endswith("-4")  # completed as a 4-part multipart upload
    assert head["ContentLength"] == len(data)
    assert open_uploads(moto, bucket) == []
    with store.open(KEY) as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest()


def test_failed_put_leaves_nothing(moto: MotoServer, bucket: str) -> None:
    store = open_storage(s3_url(moto, bucket, part_size=5 * MiB))
    seen: list[list[dict]] = []
    stream = Exploding(12 * MiB, lambda: seen.append(open_uploads(moto, bucket)))
    with pytest.raises(ConnectionResetError):
        store.put(KEY, io.BufferedReader(stream))  # dies in the third part
    # Whether boto3's CreateMultipartUpload (on its own thread) had started when the stream
    # failed depends on timing; only this key's upload may ever have been open.
    assert len(seen) == 1
    assert {u["Key"] for u in seen[0]} <= {f"blobs/v1/{KEY}"}
    assert keys_in(moto, bucket) == []
    assert open_uploads(moto, bucket) == []  # the multipart upload was aborted
    assert not store.exists(KEY)
    with pytest.raises(ConnectionResetError):
        store.put(KEY, io.BufferedReader(Exploding(1000)))  # a small, single-request put
    assert keys_in(moto, bucket) == []


def test_put_into_a_missing_bucket_is_a_storage_error(moto: MotoServer) -> None:
    store = open_storage(s3_url(moto, "wf-no-such-bucket"))
    with pytest.raises(StorageError):
        store.put(KEY, io.BytesIO(b"data"))


def test_seekable_stream_reads_ranges(moto: MotoServer, bucket: str) -> None:
    store = open_storage(s3_url(moto, bucket))
    data = os.urandom(3 * MiB + 123)
    store.put(KEY, io.BytesIO(data))
    with store.open(KEY) as fh:
        assert fh.seekable()
        assert fh.seek(0, io.SEEK_END) == len(data)
        assert fh.read(10) == b""
        fh.seek(0)
        assert fh.read(100) == data[:100]
        fh.seek(2 * MiB + 7)
        assert fh.read(5000) == data[2 * MiB + 7 : 2 * MiB + 5007]
        assert fh.tell() == 2 * MiB + 5007
        fh.seek(-50, io.SEEK_END)
        assert fh.read() == data[-50:]
        fh.seek(17)
        assert fh.read() == data[17:]


def test_presigned_url_serves_the_bytes(moto: MotoServer, bucket: str) -> None:
    store = open_storage(s3_url(moto, bucket, serve="redirect", expires=120))
    store.put(KEY, io.BytesIO(b"presigned bytes"))
    url = store.url(KEY, "demo-1.0-py3-none-any.whl")
    assert url is not None and url.startswith(moto.endpoint + f"/{bucket}/blobs/v1/{KEY}?")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"presigned bytes"
        disposition = parse_options_header(response.headers["Content-Disposition"])
    assert disposition == ("attachment", {"filename": "demo-1.0-py3-none-any.whl"})


def test_presigned_url_uses_the_public_endpoint(moto: MotoServer, bucket: str) -> None:
    public = moto.endpoint.replace("127.0.0.1", "localhost")
    store = open_storage(s3_url(moto, bucket, serve="redirect", public_endpoint_url=public))
    store.put(KEY, io.BytesIO(b"public"))
    url = store.url(KEY, "x.whl")
    assert url is not None and url.startswith(public + "/")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"public"


# --- the index server on S3 -------------------------------------------------------------------


def _app(tmp_path: Path, storage_url: str):  # type: ignore[no-untyped-def]
    settings = Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        upstream_urls=(),
        storage_url=storage_url,
    )
    services = build_services(settings)
    return create_app(services=services), services


def _upload(client, wheel: Path) -> str:  # type: ignore[no-untyped-def]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with wheel.open("rb") as fh:
        response = client.post(
            f"/{PLATFORM}/legacy/",
            data={
                ":action": "file_upload",
                "name": "s3demo",
                "version": "1.0",
                "sha256_digest": digest,
                "content": (fh, wheel.name, "application/octet-stream"),
            },
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            content_type="multipart/form-data",
        )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["sha256"] == digest
    return digest


def test_index_server_streams_files_from_s3(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    app, services = _app(tmp_path, s3_url(moto, bucket, prefix="idx"))
    try:
        client = app.test_client()
        wheel = make_wheel(tmp_path, "s3demo", "1.0")
        data = wheel.read_bytes()
        digest = _upload(client, wheel)
        stored = keys_in(moto, bucket)
        assert f"idx/{blob_key(digest)}" in stored
        assert len(stored) == 2  # the wheel and its METADATA (PEP 658)
        assert not (tmp_path / "data" / "files").exists()

        url = f"/{PLATFORM}/files/s3demo/{digest}/{wheel.name}"
        response = client.get(url)
        assert response.status_code == 200
        assert response.data == data
        assert response.headers["Content-Length"] == str(len(data))
        assert response.headers["ETag"] == f'"{digest}"'
        assert response.headers["Accept-Ranges"] == "bytes"

        response = client.head(url)
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(data))
        assert response.data == b""

        response = client.get(url, headers={"Range": "bytes=10-99"})
        assert response.status_code == 206
        assert response.data == data[10:100]
        assert response.headers["Content-Range"] == f"bytes 10-99/{len(data)}"

        response = client.get(url, headers={"Range": "bytes=-20"})
        assert response.status_code == 206
        assert response.data == data[-20:]

        response = client.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
        assert response.status_code == 416

        response = client.get(url, headers={"If-None-Match": f'"{digest}"'})
        assert response.status_code == 304
        assert response.data == b""

        response = client.get(url + ".metadata")
        assert response.status_code == 200
        assert response.data.startswith(b"Metadata-Version:")
        assert b"Name: s3demo" in response.data
    finally:
        services.engine.dispose()


def test_index_server_redirects_to_presigned_urls(
    tmp_path: Path, moto: MotoServer, bucket: str
) -> None:
    app, services = _app(tmp_path, s3_url(moto, bucket, serve="redirect", expires=300))
    try:
        client = app.test_client()
        wheel = make_wheel(tmp_path, "s3demo", "1.0")
        digest = _upload(client, wheel)
        response = client.get(f"/{PLATFORM}/files/s3demo/{digest}/{wheel.name}")
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.startswith(f"{moto.endpoint}/{bucket}/blobs/v1/{blob_key(digest)}?")
        with urllib.request.urlopen(location, timeout=10) as fetched:
            assert fetched.read() == wheel.read_bytes()
            assert wheel.name in fetched.headers["Content-Disposition"]
        metadata = client.get(f"/{PLATFORM}/files/s3demo/{digest}/{wheel.name}.metadata")
        assert metadata.status_code == 302
        with urllib.request.urlopen(metadata.headers["Location"], timeout=10) as fetched:
            assert fetched.read().startswith(b"Metadata-Version: ")
    finally:
        services.engine.dispose()


def test_gunicorn_server_on_s3(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    """The real server (gunicorn workers, its file wrapper) storing and serving through S3."""
    server = start_server(
        tmp_path / "server-data",
        tmp_path / "server.log",
        **aws_env(WHEELFARM_STORAGE_URL=s3_url(moto, bucket)),
    )
    try:
        wheel = make_wheel(tmp_path, "s3demo", "1.0")
        data = wheel.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        response = requests.post(
            f"{server.url}/{PLATFORM}/legacy/",
            data={
                ":action": "file_upload",
                "name": "s3demo",
                "version": "1.0",
                "sha256_digest": digest,
            },
            files={"content": (wheel.name, data, "application/octet-stream")},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        assert f"blobs/v1/{blob_key(digest)}" in keys_in(moto, bucket)
        url = f"{server.url}/{PLATFORM}/files/s3demo/{digest}/{wheel.name}"
        full = requests.get(url, timeout=30)
        assert full.status_code == 200 and full.content == data
        assert full.headers["Content-Length"] == str(len(data))
        object_path = f"/{bucket}/blobs/v1/{blob_key(digest)}"
        assert logged_statuses(moto, "GET", object_path) == [200]
        part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=30)
        assert part.status_code == 206 and part.content == data[100:200]
        # The server seeks: a ranged GET to S3 rather than reading the object up to the range.
        assert logged_statuses(moto, "GET", object_path) == [200, 200, 206]
    finally:
        stop_server(server)
