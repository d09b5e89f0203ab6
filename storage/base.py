"""The blob-storage interface every backend implements."""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO, Protocol

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")
# Seconds after which a temporary is taken for the leftover of an interrupted write: a younger
# one may belong to a write still running in another process (another server, same store).
STALE_AFTER = 3600.0


class StorageError(Exception):
    """A blob could not be stored or read."""


def blob_key(sha256: str, suffix: str = "") -> str:
    """The content-addressed key of a blob: ``sha256/ab/cd/<hex><suffix>``."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix}"


def check_key(key: str) -> str:
    """Refuse keys that could escape the store (``..``, absolute paths, odd characters)."""
    if not _KEY_RE.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


class BlobStorage(Protocol):
    """Keeps immutable blobs by key."""

    def put(self, key: str, data: BinaryIO) -> int:
        """Store the stream under ``key`` atomically; return the number of bytes written."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the blob; raises ``FileNotFoundError`` if absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None:
        """Remove the blob; removing an absent blob is not an error."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A path on this machine the server may send directly, or ``None``."""
        ...

    def url(self, key: str, filename: str) -> str | None:
        """A URL clients can be redirected to (e.g. presigned), or ``None`` to stream."""
        ...

    def remove_stale_temporaries(self, older_than: float = STALE_AFTER) -> int:
        """Remove the leftovers of interrupted ``put`` calls (never a blob) that are older than
        ``older_than`` seconds; return how many were removed."""
        ...
