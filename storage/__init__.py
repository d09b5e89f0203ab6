"""Where bytes are kept: a small blob-storage interface and its backends.

Callers name blobs by key (see :func:`blob_key`); a backend makes each ``put`` atomic, so a
crash never leaves a partial blob visible under its key.
"""

from storage.base import BlobStorage, StorageError, blob_key
from storage.factory import open_storage

__all__ = ["BlobStorage", "StorageError", "blob_key", "open_storage"]
