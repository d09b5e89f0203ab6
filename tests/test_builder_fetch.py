"""Downloading an sdist with a sha256 check, over real HTTP on loopback."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from builder.fetch import HashMismatch, fetch_with_hash
from tests.builder_helpers import make_pure_sdist, serve_directory


@pytest.fixture
def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "served"
    root.mkdir()
    sdist = make_pure_sdist(root)
    with serve_directory(root) as (base, _process):
        yield f"{base}/{sdist.name}", hashlib.sha256(sdist.read_bytes()).hexdigest(), sdist


def test_fetch_checks_the_hash(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, digest, original = served
    dest = tmp_path / "dl" / original.name
    assert fetch_with_hash(url, dest, digest.upper()) == dest
    assert dest.read_bytes() == original.read_bytes()


def test_fetch_refuses_a_mismatch(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, digest, original = served
    dest = tmp_path / "dl" / original.name
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(HashMismatch, match=digest):
        fetch_with_hash(url, dest, wrong)
    assert list(dest.parent.iterdir()) == []  # no partial or unchecked file left


def test_fetch_file_url_and_bad_digest(tmp_path: Path) -> None:
    sdist = make_pure_sdist(tmp_path)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    dest = fetch_with_hash(sdist.as_uri(), tmp_path / "copy.tar.gz", digest)
    assert dest.read_bytes() == sdist.read_bytes()
    with pytest.raises(ValueError, match="not a sha256"):
        fetch_with_hash(sdist.as_uri(), tmp_path / "x.tar.gz", "abc")


def test_fetch_limits_the_size(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, digest, original = served
    with pytest.raises(ValueError, match="larger than"):
        fetch_with_hash(url, tmp_path / "big" / original.name, digest, max_bytes=10)
    assert list((tmp_path / "big").iterdir()) == []
