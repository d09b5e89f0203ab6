"""A platform's view of a project: our files first, then the upstreams' that fit."""

from __future__ import annotations

from collections.abc import Iterable

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from index_server.simple.model import SimpleFile
from platforms import Platform

SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz", ".tar.xz", ".tar")


def upstream_file_fits(filename: str, platform: Platform) -> bool:
    """Upstream wheels only if the platform installs them; sdists always; nothing else."""
    if filename.endswith(".whl"):
        try:
            return platform.accepts(parse_wheel_filename(filename)[3])
        except InvalidWheelFilename:
            return False
    return filename.endswith(SDIST_SUFFIXES)


def version_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def proxied(entry: SimpleFile, files_base: str) -> SimpleFile:
    """The entry with its URL through our index, when we can check its hash on the way."""
    sha256 = entry.hashes.get("sha256")
    if not sha256:
        return entry  # nothing to verify a pulled copy against: link the upstream itself
    from dataclasses import replace

    return replace(entry, url=f"{files_base}{sha256}/{entry.filename}")


def merge_files(
    local: Iterable[SimpleFile],
    upstreams: Iterable[Iterable[SimpleFile]],
    platform: Platform,
    files_base: str,
) -> list[SimpleFile]:
    merged = list(local)
    seen = {f.filename for f in merged}
    for files in upstreams:
        for entry in files:
            if entry.filename in seen or not upstream_file_fits(entry.filename, platform):
                continue
            seen.add(entry.filename)
            merged.append(proxied(entry, files_base))
    return merged
