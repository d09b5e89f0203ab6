"""Rendered pages kept in process memory, keyed by what they were rendered from.

Keys include the version the page was built from (the project's serial, the index serial
for the root list), so a write anywhere makes older entries unreachable at once: the
database tells every process the current version with one indexed lookup.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

GZIP_MIN_BYTES = 1024


@dataclass(frozen=True)
class RenderedPage:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str  # quoted strong ETag of the identity body
    file_count: int = 0  # a project page listing nothing is answered with 404

    @property
    def gzip_etag(self) -> str:
        return self.etag[:-1] + '-gz"'


def make_page(body: bytes, content_type: str, file_count: int = 0) -> RenderedPage:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    gzipped = gzip.compress(body, compresslevel=6, mtime=0) if len(body) >= GZIP_MIN_BYTES else None
    return RenderedPage(body, gzipped, content_type, etag, file_count)


class PageCache:
    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[Hashable, RenderedPage] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def get_or_render(self, key: Hashable, render: Callable[[], RenderedPage]) -> RenderedPage:
        with self._lock:
            page = self._entries.get(key)
            if page is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return page
            self.misses += 1
        page = render()
        with self._lock:
            self._entries[key] = page
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return page

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
