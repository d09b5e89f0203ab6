"""Small immutable blobs kept in process memory by their sha256.

PEP 658 metadata files are a third of what an installer asks for, and a few hundred bytes
each: from memory, one costs about what a cached page does, not a file open, stat and
sendfile. A blob's key is its digest, so an entry is never stale; whether a file is still
served is decided by the database lookup before the cache is asked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_BLOB_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 32 * 1024 * 1024


class SmallBlobCache:
    def __init__(self, max_total: int = MAX_TOTAL_BYTES, max_blob: int = MAX_BLOB_BYTES) -> None:
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._total = 0
        self.max_total = max_total
        self.max_blob = max_blob

    def get(self, digest: str) -> bytes | None:
        with self._lock:
            data = self._entries.get(digest)
            if data is not None:
                self._entries.move_to_end(digest)
            return data

    def add(self, digest: str, data: bytes) -> None:
        if len(data) > self.max_blob:
            return
        with self._lock:
            if digest in self._entries:
                return
            self._entries[digest] = data
            self._total += len(data)
            while self._total > self.max_total:
                _, dropped = self._entries.popitem(last=False)
                self._total -= len(dropped)
