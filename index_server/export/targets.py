"""Where an export is written: a folder (for nginx) or an S3 bucket with a prefix (for a CDN).

Paths are relative and use ``/``: ``<platform>/simple/[<project>/]index.html|index.json`` for
pages (each with an ``.gz`` twin) and ``<platform>/files/<project>/<sha256>/<filename>`` for
files and their ``.metadata``, as the pages link to them.

Every write is atomic: a folder target writes a temporary file in ``.tmp/`` at its root
and renames it into place (readers see the old page or the new one, never a part); S3
shows an object only once its whole ``put`` has completed. A page's ``.gz`` twin is written
before the page and removed after it, so a client never gets a compressed page that is
missing or older than its last removal.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from storage import BlobStorage

TEMP_DIR = ".tmp"  # below a folder target's root; nginx serves nothing that starts with "."
LOCK_FILE = ".lock"


class ExportBusy(RuntimeError):
    """Another exporter holds the target."""


class ExportTarget(Protocol):
    def list(self) -> set[str]:
        """Every path in the export (never a temporary)."""
        ...

    def write_page(self, path: str, body: bytes, gzipped: bytes, content_type: str) -> bool:
        """Put a page and its ``.gz`` twin atomically; False if it already had this body."""
        ...

    def write_file(self, path: str, storage: BlobStorage, key: str, content_type: str) -> None:
        """Put a stored blob (immutable: callers write it once)."""
        ...

    def remove(self, path: str) -> None:
        """Remove one path; an absent one is no error."""
        ...

    def remove_temporaries(self) -> int:
        """Remove the leftovers of writes that were interrupted; return how many."""
        ...

    def hold(self, wait: bool) -> AbstractContextManager[None]:
        """Exclusive use of the target for one exporter (raises ExportBusy if not ``wait``)."""
        ...


class FolderTarget:
    """An export in a local folder, for nginx (``root``) or any static file server."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.temp = self.root / TEMP_DIR
        self.temp.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FolderTarget({self.root})"

    def _path(self, path: str) -> Path:
        parts = path.split("/")
        if not path or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise ValueError(f"invalid export path: {path!r}")
        return self.root.joinpath(*parts)

    def list(self) -> set[str]:
        found: set[str] = set()
        for folder, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            relative = os.path.relpath(folder, self.root)
            prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            found.update(prefix + n for n in names if not n.startswith("."))
        return found

    def write_page(self, path: str, body: bytes, gzipped: bytes, content_type: str) -> bool:
        dest = self._path(path)
        twin = dest.with_name(dest.name + ".gz")
        try:
            if dest.read_bytes() == body and twin.exists():
                return False
        except FileNotFoundError:
            pass
        self._replace(twin, gzipped)
        self._replace(dest, body)
        return True

    def _replace(self, dest: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.temp, prefix="page-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                os.fchmod(out.fileno(), 0o644)
            os.utime(tmp, (stamp := _next_mtime(dest), stamp))
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_file(self, path: str, storage: BlobStorage, key: str, content_type: str) -> None:
        dest = self._path(path)
        tmp = self.temp / f"file-{uuid.uuid4().hex}"
        source = storage.local_path(key)
        try:
            try:
                if source is None:
                    raise OSError(errno.EXDEV, "not a local blob")
                os.link(source, tmp)  # same file system: no copy of the bytes
            except FileNotFoundError:
                raise
            except OSError:  # another file system, or links not allowed: copy
                with storage.open(key) as stream, tmp.open("xb") as out:
                    shutil.copyfileobj(stream, out, 1024 * 1024)
                os.chmod(tmp, 0o644)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def remove(self, path: str) -> None:
        dest = self._path(path)
        dest.unlink(missing_ok=True)
        folder = dest.parent
        while folder != self.root and folder.parent != self.root:  # keep <platform>/
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or gone)
            folder = folder.parent

    def remove_temporaries(self) -> int:
        removed = 0
        for entry in os.scandir(self.temp):
            if entry.name != LOCK_FILE:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    @contextmanager
    def hold(self, wait: bool) -> Iterator[None]:
        with (self.temp / LOCK_FILE).open("a") as lock:
            flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            try:
                fcntl.flock(lock, flags)
            except BlockingIOError:
                raise ExportBusy(f"another exporter is writing {self.root}") from None
            yield


def _next_mtime(dest: Path) -> float:
    """Now, but always at least a second after the replaced file's time.

    nginx's ETag is the file's mtime (in seconds) and size: two versions of a page written
    in the same second with the same size would otherwise share an ETag.
    """
    now = time.time()
    try:
        return max(now, int(dest.stat().st_mtime) + 1.0)
    except FileNotFoundError:
        return now


class S3Target:
    """An export as objects ``<prefix>/<path>`` in a bucket, for a CDN in front of it.

    The URL is that of an S3 storage (``s3://BUCKET/PREFIX?endpoint_url=...``, options as in
    :mod:`storage.s3`); credentials come from the usual AWS settings.
    """

    def __init__(self, url: str, page_max_age: int = 60) -> None:
        from storage.s3 import S3Storage

        self.page_cache_control = f"max-age={page_max_age}, public"
        self.store = S3Storage.from_url(url)
        self.client = self.store.client
        self.bucket = self.store.bucket
        self.prefix = self.store.prefix
        self._md5: dict[str, str] = {}  # what we know each page object holds

    def __repr__(self) -> str:
        return f"S3Target(s3://{self.bucket}/{self.prefix})"

    def _key(self, path: str) -> str:
        if not path or ".." in path.split("/") or path.startswith("/"):
            raise ValueError(f"invalid export path: {path!r}")
        return f"{self.prefix}/{path}" if self.prefix else path

    def list(self) -> set[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        found: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", []):
                path = item["Key"].removeprefix(start)
                found.add(path)
                self._md5[path] = item["ETag"].strip('"')
        return found

    def write_page(self, path: str, body: bytes, gzipped: bytes, content_type: str) -> bool:
        digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
        if self._md5.get(path) == digest and path + ".gz" in self._md5:
            return False
        extra = {"ContentType": content_type, "CacheControl": self.page_cache_control}
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(path + ".gz"), Body=gzipped,
            ContentEncoding="gzip", **extra,
        )  # fmt: skip
        self._md5[path + ".gz"] = hashlib.md5(gzipped, usedforsecurity=False).hexdigest()
        self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=body, **extra)
        self._md5[path] = digest
        return True

    def write_file(self, path: str, storage: BlobStorage, key: str, content_type: str) -> None:
        extra = {"ContentType": content_type, "CacheControl": IMMUTABLE}
        same_store = getattr(storage, "endpoint_url", object()) == self.store.endpoint_url
        if same_store and hasattr(storage, "object_key"):
            source = {"Bucket": storage.bucket, "Key": storage.object_key(key)}  # type: ignore[attr-defined]
            self.client.copy_object(
                Bucket=self.bucket, Key=self._key(path), CopySource=source,
                MetadataDirective="REPLACE", **extra,
            )  # fmt: skip
        else:
            with storage.open(key) as stream:
                self.client.upload_fileobj(
                    stream, self.bucket, self._key(path), ExtraArgs=extra,
                    Config=self.store.transfer,
                )  # fmt: skip
        self._md5[path] = ""

    def remove(self, path: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(path))
        self._md5.pop(path, None)

    def remove_temporaries(self) -> int:
        return 0  # a put is all or nothing: no temporaries in a bucket

    @contextmanager
    def hold(self, wait: bool) -> Iterator[None]:
        yield  # S3 has no lock: run one follower per bucket and prefix (see the README)


IMMUTABLE = "public, max-age=365000000, immutable"


def open_target(url: str, page_max_age: int = 60) -> ExportTarget:
    """``s3://bucket/prefix?...`` for a bucket; ``file:///path`` or a plain path for a folder."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return S3Target(url, page_max_age)  # type: ignore[return-value]
    if parts.scheme in ("", "file"):
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"an export folder must be local: {url!r}")
        return FolderTarget(Path(unquote(parts.path if parts.scheme else url)))  # type: ignore[return-value]
    raise ValueError(f"unsupported export target {url!r}: use a folder or s3://bucket/prefix")
