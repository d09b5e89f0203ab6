"""Blob storage in a local folder, with atomic writes by rename."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage.base import STALE_AFTER, check_key

CHUNK = 1024 * 1024
# No key can name a file starting with a dot (check_key), so no temporary is ever a blob.
TEMP_PREFIX = ".tmp-"


class LocalStorage:
    """Blobs as files below ``root``.

    ``put`` writes to a temporary file in the same folder, fsyncs it and renames it into
    place: readers see the whole blob or none, whenever the process dies. A process killed
    mid-write leaves its ``.tmp-*`` file behind: ``remove_stale_temporaries`` removes those.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: BinaryIO) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(data, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
                written = out.tell()
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return written

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def url(self, key: str, filename: str) -> str | None:
        return None

    def remove_stale_temporaries(self, older_than: float = STALE_AFTER) -> int:
        cutoff = time.time() - older_than
        removed = 0
        for entry in _temporaries(self.root):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass  # its writer renamed or removed it meanwhile
        return removed


def _temporaries(folder: Path | str) -> Iterator[os.DirEntry[str]]:
    """Every ``.tmp-*`` file below ``folder``: one ``scandir`` per folder, no stat per blob."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _temporaries(entry.path)
            elif entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                yield entry


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
