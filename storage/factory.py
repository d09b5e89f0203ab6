"""Open a storage backend from its URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.base import BlobStorage
from storage.local import LocalStorage


def open_storage(url: str) -> BlobStorage:
    """``file:///path`` (or a plain path) opens a local folder; ``s3://bucket/prefix`` a bucket.

    See :mod:`storage.s3` for the options of an ``s3://`` URL.
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file storage URL must be local: {url!r}")
        return LocalStorage(Path(unquote(parts.path if parts.scheme else url)))
    if parts.scheme == "s3":
        from storage.s3 import S3Storage  # boto3 is only needed for S3 storage

        return S3Storage.from_url(url)
    raise ValueError(f"unsupported storage URL scheme {parts.scheme!r} in {url!r}")
