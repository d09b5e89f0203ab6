"""Open a storage backend from its URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.base import BlobStorage
from storage.local import LocalStorage


def open_storage(url: str) -> BlobStorage:
    """``file:///path`` (or a plain path) opens a local folder."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file storage URL must be local: {url!r}")
        return LocalStorage(Path(unquote(parts.path if parts.scheme else url)))
    raise ValueError(f"unsupported storage URL scheme {parts.scheme!r} in {url!r}")
