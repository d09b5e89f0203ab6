"""What a built wheel contains (its importable top-level names and its dependencies), and
what its sdist holds."""

from __future__ import annotations

import csv
import io
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

ZIP_EPOCH = 315532800  # 1980-01-01: the earliest time a zip file can hold


def _dist_info_file(zf: zipfile.ZipFile, name: str) -> str | None:
    for member in zf.namelist():
        parts = member.split("/")
        if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == name:
            return zf.read(member).decode("utf-8", errors="replace")
    return None


def top_level_modules(wheel: Path) -> list[str]:
    """Names ``import`` accepts at the top of the wheel: top_level.txt, else the RECORD."""
    with zipfile.ZipFile(wheel) as zf:
        listed = _dist_info_file(zf, "top_level.txt")
        if listed is not None:
            names = [line.strip() for line in listed.splitlines()]
        else:
            record = _dist_info_file(zf, "RECORD") or ""
            paths = [row[0] for row in csv.reader(io.StringIO(record)) if row]
            names = []
            for path in paths:
                first, _, rest = path.partition("/")
                if first.endswith((".dist-info", ".data")) or first == "__pycache__":
                    continue
                if not rest:  # a top-level file: module.py or _ext.cpython-311-...so
                    if first.endswith(".py"):
                        names.append(first[:-3])
                    elif first.endswith(".so"):
                        names.append(first.split(".")[0])
                elif path.endswith("/__init__.py") and path.count("/") == 1:
                    names.append(first)
    return sorted({n for n in names if n.isidentifier()})


def requires_dist(wheel: Path) -> list[str]:
    """The wheel's ``Requires-Dist`` lines (its dependencies, with markers)."""
    with zipfile.ZipFile(wheel) as zf:
        metadata = _dist_info_file(zf, "METADATA") or ""
    return HeaderParser().parsestr(metadata).get_all("Requires-Dist") or []


def _sdist_members(sdist: Path) -> list[tuple[str, int]]:
    """(name, modification time) of each file in an sdist; empty when it cannot be read."""
    try:
        if sdist.name.endswith(".zip"):
            import time

            with zipfile.ZipFile(sdist) as zf:
                return [
                    (info.filename, int(time.mktime((*info.date_time, 0, 0, -1))))
                    for info in zf.infolist()
                ]
        with tarfile.open(sdist) as tar:
            return [(member.name, int(member.mtime)) for member in tar.getmembers()]
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return []


def sdist_epoch(sdist: Path) -> int:
    """The newest file time inside an sdist: a stable SOURCE_DATE_EPOCH for its builds."""
    return max([ZIP_EPOCH, *(mtime for _name, mtime in _sdist_members(sdist))])


COMPILED_SOURCE_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".pyx", ".f", ".f90", ".rs")


def compiled_sources(sdist: Path) -> list[str]:
    """The sdist's files in a compiled language (C, C++, Cython, Fortran, Rust)."""
    return sorted(
        name for name, _mtime in _sdist_members(sdist) if name.endswith(COMPILED_SOURCE_SUFFIXES)
    )
