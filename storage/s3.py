"""Blob storage in an S3 bucket (AWS S3 or a compatible store: MinIO, Ceph RGW, ...), via boto3.

Configure it with ``WHEELFARM_STORAGE_URL``::

    s3://BUCKET[/PREFIX][?OPTION=VALUE&...]

for example ``s3://wheels/prod?endpoint_url=http://127.0.0.1:9000&region=us-east-1&serve=redirect``.
Blobs are stored as ``PREFIX/<key>``; the bucket must exist.

Options (query parameters; an unknown one is an error):

``endpoint_url``
    The S3 endpoint. Without it boto3 uses its usual settings: ``AWS_ENDPOINT_URL_S3``, then
    ``AWS_ENDPOINT_URL``, then ``endpoint_url`` in the profile of ``~/.aws/config``, else AWS.
``region``
    The region to sign for. Default: ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` / the profile.
``profile``
    A named profile of the AWS config files. Default: ``AWS_PROFILE``, else ``default``.
``addressing_style``
    ``auto`` (default), ``path`` or ``virtual``. Many self-hosted stores want ``path``.
``serve``
    ``stream`` (default): the index server reads the blob from S3 and streams it to clients
    (``url()`` is ``None``; Range and conditional requests still work, see ``open()``).
    ``redirect``: downloads get a 302 to a presigned GET URL, so the bytes never pass
    through the index server. Clients must then be able to reach the S3 endpoint.
``expires``
    Lifetime of presigned URLs in seconds (default 3600).
``public_endpoint_url``
    The endpoint written into presigned URLs when clients reach S3 at another address than
    the server does (e.g. the server uses an internal name). Default: the server's endpoint.
``part_size``
    Multipart chunk size and threshold in bytes (default 8 MiB, at least 5 MiB as S3 wants).

Credentials never go in the URL: boto3 finds them as usual (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, the shared credentials file, the profile,
an instance or container role, ...). Other boto3 settings apply as usual too, e.g.
``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` for stores that reject the checksum headers
recent boto3 sends by default.

Atomicity: S3 shows an object only once its upload has completed, and a failed multipart
upload is aborted by boto3's managed transfer, so a crash never leaves a partial blob. A
process killed mid-upload leaves its multipart upload open (invisible, but its parts are
stored and billed): ``remove_stale_temporaries`` aborts those, as does a bucket lifecycle rule
``AbortIncompleteMultipartUpload``. It needs ``s3:ListBucketMultipartUploads`` and
``s3:AbortMultipartUpload``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from werkzeug.http import dump_options_header

from storage.base import STALE_AFTER, StorageError, check_key

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MiB
MIN_PART_SIZE = 5 * MiB
DEFAULT_EXPIRES = 3600
READ_BUFFER = 1 * MiB
SERVE_MODES = ("stream", "redirect")
_OPTIONS = {
    "endpoint_url",
    "region",
    "profile",
    "addressing_style",
    "serve",
    "expires",
    "public_endpoint_url",
    "part_size",
}
_MISSING = {"404", "NoSuchKey", "NotFound"}
_UPLOAD_GONE = {"404", "NoSuchUpload"}


class S3Storage:
    """Blobs as objects ``<prefix>/<key>`` in one bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        addressing_style: str | None = None,
        serve: str = "stream",
        expires: int = DEFAULT_EXPIRES,
        public_endpoint_url: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 storage URL needs a bucket: s3://BUCKET[/PREFIX]")
        if serve not in SERVE_MODES:
            raise ValueError(f"serve must be one of {SERVE_MODES}, not {serve!r}")
        if addressing_style not in (None, "auto", "path", "virtual"):
            raise ValueError(
                "addressing_style must be auto, path or virtual, not " + repr(addressing_style)
            )
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if expires <= 0:
            raise ValueError("expires must be a positive number of seconds")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.serve = serve
        self.expires = expires
        self.endpoint_url = endpoint_url
        self.public_endpoint_url = public_endpoint_url
        self._session = boto3.session.Session(profile_name=profile, region_name=region)
        s3_options = {"addressing_style": addressing_style} if addressing_style else {}
        self._config = Config(signature_version="s3v4", s3=s3_options, retries={"mode": "standard"})
        # Clients are thread-safe, sessions are not: make every client here, up front.
        self.client = self._session.client("s3", endpoint_url=endpoint_url, config=self._config)
        self._presigner = (
            self._session.client("s3", endpoint_url=public_endpoint_url, config=self._config)
            if public_endpoint_url
            else self.client
        )
        self.transfer = TransferConfig(
            multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=4
        )

    @classmethod
    def from_url(cls, url: str) -> S3Storage:
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"not an s3:// URL: {url!r}")
        options: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if name not in _OPTIONS:
                raise ValueError(f"unknown S3 storage option {name!r} in {url!r}")
            if name in options:
                raise ValueError(f"S3 storage option {name!r} given twice in {url!r}")
            options[name] = value
        kwargs: dict[str, Any] = {k: v for k, v in options.items() if v}
        for name in ("expires", "part_size"):
            if name in kwargs:
                try:
                    kwargs[name] = int(kwargs[name])
                except ValueError:
                    raise ValueError(f"{name} must be an integer, not {kwargs[name]!r}") from None
        return cls(parts.netloc, parts.path, **kwargs)

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3Storage(s3://{self.bucket}/{self.prefix}{where}, serve={self.serve})"

    def object_key(self, key: str) -> str:
        """The S3 object key of a blob key."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: BinaryIO) -> int:
        counted = _CountingReader(data)
        try:
            self.client.upload_fileobj(
                counted,
                self.bucket,
                self.object_key(key),
                ExtraArgs={"ContentType": "application/octet-stream"},
                Config=self.transfer,
            )
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise StorageError(f"could not store {key} in s3://{self.bucket}: {exc}") from exc
        return counted.count

    def open(self, key: str) -> BinaryIO:
        raw = S3ObjectReader(self.client, self.bucket, self.object_key(key))
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)  # type: ignore[return-value]

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not delete {key} from s3://{self.bucket}: {exc}") from exc

    def local_path(self, key: str) -> None:
        return None

    def url(self, key: str, filename: str) -> str | None:
        """In ``serve=redirect`` mode, a presigned GET URL that names the download."""
        if self.serve != "redirect":
            return None
        disposition = dump_options_header("attachment", {"filename": filename})
        try:
            return str(
                self._presigner.generate_presigned_url(
                    "get_object",
                    Params={
                        "Bucket": self.bucket,
                        "Key": self.object_key(key),
                        "ResponseContentDisposition": disposition,
                    },
                    ExpiresIn=self.expires,
                )
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"could not presign {key}: {exc}") from exc

    def remove_stale_temporaries(self, older_than: float = STALE_AFTER) -> int:
        """Abort the multipart uploads under the prefix (the whole bucket without one) that
        were initiated more than ``older_than`` seconds ago (by S3's clock, against ours)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        try:
            stale = [u for u in self._multipart_uploads() if u["Initiated"] < cutoff]
            return sum(self._abort(upload) for upload in stale)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(
                f"could not abort stale multipart uploads in s3://{self.bucket}: {exc}"
            ) from exc

    def _multipart_uploads(self) -> Iterator[dict[str, Any]]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Uploads", [])

    def _abort(self, upload: dict[str, Any]) -> bool:
        """Abort one upload; ``False`` if it was completed or aborted meanwhile."""
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _UPLOAD_GONE:
                return False
            raise
        return True

    def _head(self, key: str) -> dict[str, Any]:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.object_key(key)))
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"no blob {key} in s3://{self.bucket}") from exc
            raise StorageError(f"could not look up {key} in s3://{self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not look up {key} in s3://{self.bucket}: {exc}") from exc


class S3ObjectReader(io.RawIOBase):
    """A seekable, read-only view of one S3 object.

    Opening issues one GET of the whole object (so a missing blob raises
    ``FileNotFoundError`` at once and its length is known). Reading streams that response;
    after a seek elsewhere the next read issues a ranged GET (``Range: bytes=<pos>-``, with
    ``If-Match`` on the object's ETag) from the new position. Seeking alone costs nothing,
    so ``seek(0, SEEK_END)`` then ``seek(0)`` learns the size and keeps the first response.
    """

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        self._body: Any = None
        response = self._get()
        self.length = int(response["ContentLength"])
        self._etag: str | None = response.get("ETag")
        self._body = response["Body"]
        self._body_pos = 0
        self._pos = 0

    def _get(self, **extra: str) -> dict[str, Any]:
        try:
            return dict(self._client.get_object(Bucket=self._bucket, Key=self._key, **extra))
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"no object {self._key} in s3://{self._bucket}") from exc
            raise StorageError(f"could not read s3://{self._bucket}/{self._key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"could not read s3://{self._bucket}/{self._key}: {exc}") from exc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("seek on a closed S3 object")
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        elif whence == io.SEEK_END:
            position = self.length + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise OSError(f"negative seek position {position}")
        self._pos = position
        return position

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed S3 object")
        want = min(len(buffer), self.length - self._pos)
        if want <= 0:
            return 0
        if self._body is None or self._body_pos != self._pos:
            self._drop_body()
            extra = {"Range": f"bytes={self._pos}-"}
            if self._etag:
                extra["IfMatch"] = self._etag
            self._body = self._get(**extra)["Body"]
            self._body_pos = self._pos
        try:
            data = self._body.read(want)
        except (BotoCoreError, OSError) as exc:
            self._drop_body()
            raise StorageError(f"reading s3://{self._bucket}/{self._key} failed: {exc}") from exc
        if not data:
            self._drop_body()
            raise StorageError(f"s3://{self._bucket}/{self._key} ended early at {self._pos}")
        count = len(data)
        buffer[:count] = data
        self._pos += count
        self._body_pos += count
        return count

    def _drop_body(self) -> None:
        if self._body is not None:
            body, self._body = self._body, None
            body.close()

    def close(self) -> None:
        self._drop_body()
        super().close()


class _CountingReader:
    """Counts the bytes read from a stream (boto3 reads it as a non-seekable stream)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data


def _is_missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code")) in _MISSING or status == 404


__all__ = ["S3ObjectReader", "S3Storage"]
