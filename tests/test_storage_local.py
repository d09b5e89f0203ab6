"""LocalStorage: blobs in a folder, written atomically, keys that cannot escape the folder."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from storage import blob_key, open_storage
from storage.local import LocalStorage

KEY = blob_key("ab" * 32)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_open_exists_size_delete(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "blobs")
    assert not store.exists(KEY)
    written = store.put(KEY, io.BytesIO(b"hello world"))
    assert written == 11
    assert store.exists(KEY)
    assert store.size(KEY) == 11
    with store.open(KEY) as fh:
        assert fh.read() == b"hello world"
    assert store.local_path(KEY) == (tmp_path / "blobs" / KEY).resolve()
    assert store.url(KEY, "x.whl") is None
    assert _files(tmp_path / "blobs") == [KEY]
    store.delete(KEY)
    assert not store.exists(KEY)
    assert _files(tmp_path / "blobs") == []
    store.delete(KEY)  # deleting an absent blob is not an error
    with pytest.raises(FileNotFoundError):
        store.open(KEY)


def test_put_replaces_whole_blob(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.put(KEY, io.BytesIO(b"a" * 3_000_000))
    store.put(KEY, io.BytesIO(b"short"))
    with store.open(KEY) as fh:
        assert fh.read() == b"short"
    assert _files(tmp_path) == [KEY]


def test_large_blob_streams_in_chunks(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    data = bytes(range(256)) * 12_000  # about 3 MiB: several copy chunks
    assert store.put(KEY, io.BytesIO(data)) == len(data)
    assert store.size(KEY) == len(data)
    with store.open(KEY) as fh:
        assert fh.read() == data


class _FailingReader(io.RawIOBase):
    """Gives some bytes, then fails, like a client connection dropped mid-upload."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise ConnectionResetError("client went away")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_failed_put_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    with pytest.raises(ConnectionResetError):
        store.put(KEY, _FailingReader(2_500_000))  # fails after more than one chunk
    assert not store.exists(KEY)
    assert _files(tmp_path) == []  # no blob and no temporary file


def test_failed_put_keeps_previous_blob(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    store.put(KEY, io.BytesIO(b"old"))
    with pytest.raises(ConnectionResetError):
        store.put(KEY, _FailingReader(10))
    with store.open(KEY) as fh:
        assert fh.read() == b"old"
    assert _files(tmp_path) == [KEY]


@pytest.mark.parametrize(
    "key",
    [
        "../escape",
        "a/../../escape",
        "a/..",
        "/etc/passwd",
        "//etc/passwd",
        "",
        "a//b",
        ".hidden",
        "a/b\x00c",
        "a\\..\\b",
        "a/b/",
    ],
)
def test_bad_keys_refused(tmp_path: Path, key: str) -> None:
    store = LocalStorage(tmp_path / "store")
    for call in (
        lambda: store.put(key, io.BytesIO(b"x")),
        lambda: store.open(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(ValueError, match="invalid storage key"):
            call()
    assert _files(tmp_path) == []


def test_blob_key() -> None:
    digest = "0123456789abcdef" * 4
    assert blob_key(digest) == f"sha256/01/23/{digest}"
    assert blob_key(digest, ".metadata") == f"sha256/01/23/{digest}.metadata"
    for bad in ("../" + digest[3:], digest.upper(), digest[:-1], ""):
        with pytest.raises(ValueError):
            blob_key(bad)


def test_open_storage_urls(tmp_path: Path) -> None:
    by_url = open_storage((tmp_path / "a").as_uri())
    assert isinstance(by_url, LocalStorage)
    assert by_url.root == (tmp_path / "a").resolve()
    by_path = open_storage(str(tmp_path / "b"))
    assert isinstance(by_path, LocalStorage)
    assert by_path.root == (tmp_path / "b").resolve()
    with pytest.raises(ValueError, match="must be local"):
        open_storage("file://otherhost/x")
    with pytest.raises(ValueError, match="unsupported storage URL scheme"):
        open_storage("ftp://example.org/x")
