"""Removing what interrupted work leaves behind when a server process is killed.

- upload scratch folders (``upload-*``, see ``views/upload.py``) and half-made session-key
  files (``.secret_key.*``, see ``console/security.py``) in the data dir;
- the storage's temporaries: ``.tmp-*`` files of local storage, open S3 multipart uploads
  (``BlobStorage.remove_stale_temporaries``).

None of them is ever listed or served, so they only take space. Only those older than a
cutoff are removed: a younger one may belong to another server on the same data dir or store.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from index_server.config import Settings
from index_server.console.security import SECRET_KEY_FILE
from storage import BlobStorage, open_storage
from storage.base import STALE_AFTER

log = logging.getLogger("wheelfarm.leftovers")

UPLOAD_SCRATCH_PREFIX = "upload-"  # views/upload.py's scratch folders in the data dir
SCRATCH_PATTERNS = (f"{UPLOAD_SCRATCH_PREFIX}*", f".{SECRET_KEY_FILE}.*")


@dataclass(frozen=True)
class Removed:
    scratch: int  # entries of the data dir
    temporaries: int  # of the storage


def remove_leftovers(
    settings: Settings, older_than: float = STALE_AFTER, storage: BlobStorage | None = None
) -> Removed:
    """Remove the leftovers older than ``older_than`` seconds; log one line with the counts."""
    storage = storage or open_storage(settings.resolved_storage_url)
    removed = Removed(
        scratch=remove_stale_scratch(settings.data_dir, older_than),
        temporaries=storage.remove_stale_temporaries(older_than),
    )
    log.info(
        "removed stale leftovers",
        extra={
            "scratch": removed.scratch,
            "temporaries": removed.temporaries,
            "older_than": older_than,
        },
    )
    return removed


def remove_stale_scratch(data_dir: Path, older_than: float) -> int:
    """Remove the data dir's scratch entries last modified more than ``older_than`` s ago."""
    if not data_dir.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    with os.scandir(data_dir) as entries:
        for entry in entries:
            if _is_scratch(entry.name) and _remove_if_stale(entry, cutoff):
                removed += 1
    return removed


def _is_scratch(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SCRATCH_PATTERNS)


def _remove_if_stale(entry: os.DirEntry[str], cutoff: float) -> bool:
    try:
        if _last_modified(entry) >= cutoff:
            return False
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    except FileNotFoundError:
        return False  # finished (or removed by another server) meanwhile
    return True


def _last_modified(entry: os.DirEntry[str]) -> float:
    """The newest mtime of the entry and, for a folder, of what it holds (an upload being
    saved into an old folder is not stale)."""
    newest = entry.stat(follow_symlinks=False).st_mtime
    if entry.is_dir(follow_symlinks=False):
        with os.scandir(entry.path) as inside:
            for child in inside:
                newest = max(newest, child.stat(follow_symlinks=False).st_mtime)
    return newest
