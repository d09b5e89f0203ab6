"""Hostile inputs for the property-based tests: a hypothesis profile, archive builders (zip
and tar.gz, with the nasty kinds: bombs, lying sizes, escaping paths, links, many members),
strategies, and the checks every answer must pass (no 500, no stray file, bounded memory).

The archives are built byte by byte where the standard library would refuse to write them
(a central directory that lies, a gzip bomb made of repeated compressed blocks).
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import time
import tracemalloc
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# --- the hypothesis profile -------------------------------------------------------------------
# "wheelfarm" (the default) keeps the whole file near half a minute on 2 cores; CI runs
# derandomized so that a run is repeatable; "wheelfarm-long" is for fuzzing by hand:
#   HYPOTHESIS_PROFILE=wheelfarm-long pytest tests/test_hostile_input.py
_COMMON: dict[str, Any] = {
    "deadline": timedelta(seconds=5),  # per example; the bombs also assert their own bound
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
    "database": None,  # no .hypothesis/ folder in the work tree; failures print a blob
    "print_blob": True,
}
settings.register_profile("wheelfarm", **_COMMON, derandomize=bool(os.environ.get("CI")))
settings.register_profile("wheelfarm-long", **_COMMON, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "wheelfarm"))

# Examples per test, by cost: pure parsers are cheap, HTTP requests less so.
PARSER_EXAMPLES = 300
ARCHIVE_EXAMPLES = 150
HTTP_EXAMPLES = 60
UPLOAD_EXAMPLES = 40


def examples(n: int) -> settings:
    """``n`` examples under the default profile; the long profile's count otherwise."""
    current = settings.default
    if os.environ.get("HYPOTHESIS_PROFILE", "wheelfarm") != "wheelfarm":
        return settings(current)
    return settings(current, max_examples=n)


# A string put into every hostile file name and path: if it ever names a file on disk
# outside the storage folder, something wrote where it must not.
MARKER = "wfhostile"

# --- memory and time bounds -------------------------------------------------------------------


@dataclass
class Usage:
    seconds: float = 0.0
    peak_bytes: int = 0


@contextmanager
def bounded(max_seconds: float, max_mib: float) -> Iterator[Usage]:
    """Measure the wall time and the peak of Python allocations (tracemalloc) of a block,
    and fail if either passes its bound. (``ru_maxrss`` is a per-process high-water mark:
    in a test process that already peaked higher it cannot see a new allocation at all.)"""
    usage = Usage()
    already = tracemalloc.is_tracing()
    if not already:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    started = time.monotonic()
    try:
        yield usage
    finally:
        usage.seconds = time.monotonic() - started
        usage.peak_bytes = tracemalloc.get_traced_memory()[1] - base
        if not already:
            tracemalloc.stop()
    assert usage.seconds < max_seconds, f"took {usage.seconds:.1f}s (bound {max_seconds}s)"
    peak_mib = usage.peak_bytes / 2**20
    assert peak_mib < max_mib, f"peak {peak_mib:.0f} MiB of Python memory (bound {max_mib})"


# --- zip archives -----------------------------------------------------------------------------

COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
SYMLINK_ATTR = (stat.S_IFLNK | 0o777) << 16


@dataclass(frozen=True)
class ZipMember:
    name: str
    data: bytes
    compress_type: int = zipfile.ZIP_DEFLATED
    symlink: bool = False
    flag_bits: int = 0  # e.g. 0x1: "encrypted"


def build_zip(members: list[ZipMember]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point
        with zipfile.ZipFile(buffer, "w") as archive:
            for member in members:
                info = zipfile.ZipInfo(member.name, date_time=(2024, 1, 1, 0, 0, 0))
                info.compress_type = member.compress_type
                if member.symlink:
                    info.external_attr = SYMLINK_ATTR
                archive.writestr(info, member.data)
    data = bytearray(buffer.getvalue())
    if any(m.flag_bits for m in members):
        _patch_zip_headers(data, members)
    return bytes(data)


def _patch_zip_headers(data: bytearray, members: list[ZipMember]) -> None:
    """Set general-purpose flag bits in the local and central headers, in member order."""
    local, central = 0, 0
    for member in members:
        local = data.find(b"PK\x03\x04", local)
        central = data.find(b"PK\x01\x02", central)
        if local < 0 or central < 0:
            return
        struct.pack_into("<H", data, local + 6, _u16(data, local + 6) | member.flag_bits)
        struct.pack_into("<H", data, central + 8, _u16(data, central + 8) | member.flag_bits)
        local, central = local + 4, central + 4


def _u16(data: bytearray, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def set_declared_size(archive: bytes, size: int) -> bytes:
    """Every member's uncompressed size, in local and central headers, set to ``size``."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        while at >= 0:
            struct.pack_into("<I", data, at + offset, size & 0xFFFFFFFF)
            at = data.find(signature, at + 4)
    return bytes(data)


def zip_with_many_entries(count: int, declared: int | None = None) -> bytes:
    """A zip whose central directory lists ``count`` minimal (empty, stored) members, each
    at offset 0, with a zip64 end record carrying the count (or ``declared``: a lie, which
    zipfile ignores: it reads the whole directory)."""
    entries = bytearray()
    for i in range(count):
        name = f"{i:x}".encode()
        entries += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0
        )
        entries += name
    total = count if declared is None else declared
    zip64_end = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, total, total, len(entries), 0
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(entries), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(entries) + zip64_end + locator + end


# --- tar.gz archives --------------------------------------------------------------------------

TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "dir": tarfile.DIRTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
}


@dataclass(frozen=True)
class TarMember:
    name: str
    data: bytes = b""
    kind: str = "file"
    linkname: str = ""
    declared_size: int | None = None  # a header size that lies about the data that follows
    pax: dict[str, str] = field(default_factory=dict)


def tar_header(
    name: str, size: int, kind: str = "file", linkname: str = "", pax: dict[str, str] | None = None
) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size if kind == "file" else 0
    info.type = TAR_TYPES[kind]
    info.linkname = linkname
    info.mtime = 1704067200
    info.pax_headers = pax or {}
    return info.tobuf(format=tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT)


def build_tar(members: list[TarMember]) -> bytes:
    """The uncompressed tar stream, written header by header (so sizes may lie)."""
    out = bytearray()
    for member in members:
        size = len(member.data) if member.declared_size is None else member.declared_size
        out += tar_header(member.name, size, member.kind, member.linkname, member.pax)
        if member.kind == "file":
            out += member.data + b"\0" * (-len(member.data) % 512)
    return bytes(out + b"\0" * 1024)


def build_tar_gz(members: list[TarMember]) -> bytes:
    return gzip.compress(build_tar(members), compresslevel=1, mtime=0)


def tar_gz_bomb(project: str, version: str, zeros: int, pkg_info: bytes) -> bytes:
    """A .tar.gz whose first member is ``zeros`` bytes of zeros and whose PKG-INFO comes
    after it: gzip members concatenated, so it is tiny to build and ~1000 times bigger
    unpacked."""
    block = 64 * 2**20
    chunk = gzip.compress(b"\0" * block, compresslevel=9, mtime=0)
    root = f"{project}-{version}"
    parts = [gzip.compress(tar_header(f"{root}/zeros", zeros), mtime=0)]
    parts += [chunk] * (zeros // block)
    tail = build_tar([TarMember(f"{root}/PKG-INFO", pkg_info)])
    parts.append(gzip.compress(tail, mtime=0))
    return b"".join(parts)


def tar_gz_with_many_members(project: str, version: str, count: int, pkg_info: bytes) -> bytes:
    """``count`` empty members, then PKG-INFO."""
    root = f"{project}-{version}"
    empty = tar_header(f"{root}/f", 0)
    tail = build_tar([TarMember(f"{root}/PKG-INFO", pkg_info)])
    return gzip.compress(empty * count + tail, compresslevel=1, mtime=0)


# --- strategies -------------------------------------------------------------------------------

# Path names that try to escape, or to confuse a reader.
NASTY_PATHS = (
    f"/tmp/{MARKER}-abs",
    f"../../{MARKER}-up",
    f"demo-1.0.dist-info/../../{MARKER}-up",
    f"..\\..\\{MARKER}-win",
    f"C:\\{MARKER}",
    f"demo-1.0/../{MARKER}",
    f"./demo-1.0/{MARKER}",
    f"demo-1.0//{MARKER}",
    "",
    ".",
    "..",
    "/",
    f"{MARKER}\x00.txt",
    f"{MARKER}\n.txt",
    f"{MARKER}-" + "x" * 300,
    "démo-1.0.dist-info/METADATA",
    "demo-1.0.dist-info/METADATA/",
)

# Filenames sent for an upload or a download: nasty, plausible, and in between.
NASTY_FILENAMES = (
    f"../{MARKER}-1.0.tar.gz",
    f"/etc/{MARKER}-1.0-py3-none-any.whl",
    f"..\\{MARKER}-1.0.tar.gz",
    f"{MARKER}-1.0.tar.gz\x00.whl",
    f"{MARKER}-1.0-py3-none-any.whl/",
    f".{MARKER}-1.0.tar.gz",
    f"{MARKER} -1.0.tar.gz",
    f"{MARKER}-1.0-py3-none-any.whl.metadata",
    f"{MARKER}-1.0-py3-none-any.WHL",
    f"{MARKER}-1.0-1-py3-none-any.whl",
    f"{MARKER}-1.0-x-py3-none-any.whl",
    f"{MARKER}-1.0-py3-none-manylinux_2_17_x86_64.whl",
    f"{MARKER}-1.0-cp311-cp311-linux_x86_64.whl",
    f"{MARKER}-1.0-cp99-cp99-win_amd64.whl",
    f"{MARKER}-1.0.zip",
    f"{MARKER}-1.0.tar",
    f"{MARKER}-1.0.tar.bz2",
    f"{MARKER}-1.0.egg",
    f"{MARKER}.tar.gz",
    f"{MARKER}-.tar.gz",
    f"{MARKER}-1.0-py3-none-any-extra.whl",
    f"{MARKER}-not.a.version-py3-none-any.whl",
    f"{MARKER}-1.0+local-py3-none-any.whl",
    f"{MARKER}-" + "1" * 300 + ".tar.gz",
    "%2e%2e%2f" + MARKER + "-1.0.tar.gz",
    "CON-1.0.tar.gz",
)

text_junk = st.text(max_size=40)
# Name and version parts in the alphabet a filename allows, and a bit beyond.
_part = st.one_of(
    st.from_regex(r"[A-Za-z0-9._+!]{1,12}", fullmatch=True),
    st.text(alphabet="aZ09._-+!~ /\\\x00é", max_size=8),
)
valid_names = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?", fullmatch=True)
valid_versions = st.from_regex(
    r"(0|[1-9][0-9]{0,3})(\.(0|[1-9][0-9]{0,3})){0,3}((a|b|rc)[0-9]{1,2})?(\.post[0-9]{1,2})?"
    r"(\.dev[0-9]{1,2})?",
    fullmatch=True,
)
wheel_tags = st.sampled_from(
    [
        "py3-none-any",
        "py2.py3-none-any",
        "cp311-cp311-linux_x86_64",
        "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
        "cp311-abi3-manylinux_2_28_aarch64",
        "cp312-cp312-win_amd64",
        "cp311-none-any",
    ]
)


@st.composite
def flipped(draw: st.DrawFn, data: bytes, max_flips: int = 8) -> bytes:
    """``data`` with a few bytes overwritten at random places."""
    if not data:
        return data
    buffer = bytearray(data)
    places = st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255))
    for at, value in draw(st.lists(places, max_size=max_flips)):
        buffer[at] = value
    return bytes(buffer)


@st.composite
def filenames(draw: st.DrawFn) -> str:
    """Arbitrary text, near-miss distribution names, and the nasty list."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=300))
    if kind == 1:
        return draw(st.sampled_from(NASTY_FILENAMES))
    parts = draw(st.lists(_part, min_size=1, max_size=6))
    suffix = draw(st.sampled_from([".whl", ".tar.gz", ".zip", ".tar", ".egg", "", ".metadata"]))
    return "-".join(parts) + suffix


# Core metadata: header lines from the real field names and from noise, in any order and
# case, with any values, line ends and encodings.
FIELDS = (
    "Metadata-Version",
    "Name",
    "Version",
    "Requires-Python",
    "Requires-Dist",
    "Summary",
    "Description-Content-Type",
    "Dynamic",
    "Provides-Extra",
    "License-Expression",
    "License-File",
    "Classifier",
    "Project-URL",
)
ENCODINGS = ("utf-8", "latin-1", "utf-16", "utf-8-sig", "cp1252", "utf-32", "ascii")
_header_names = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(FIELDS).map(str.lower),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
    st.text(max_size=10),
)


@st.composite
def metadata_bytes(draw: st.DrawFn, name: str, version: str) -> bytes:
    lines: list[tuple[str, str]] = []
    if draw(st.booleans()):
        lines.append(("Metadata-Version", draw(st.sampled_from(["2.1", "2.4", "1.0", "9.9", ""]))))
    if draw(st.booleans()):
        lines.append(("Name", draw(st.one_of(st.just(name), valid_names, text_junk))))
    if draw(st.booleans()):
        lines.append(("Version", draw(st.one_of(st.just(version), valid_versions, text_junk))))
    lines += draw(st.lists(st.tuples(_header_names, st.text(max_size=60)), max_size=8))
    lines = draw(st.permutations(lines))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(f"{k}: {v}" for k, v in lines)
    if draw(st.booleans()):
        text += newline * 2 + draw(st.text(max_size=200))  # the description body
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    encoding = draw(st.sampled_from(ENCODINGS))
    return text.encode(encoding, errors="replace")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


# What a handler expects under each key, so that random bodies get past the first check
# and reach the database (where NUL or an over-long string would fail on PostgreSQL).
PLAUSIBLE: dict[str, list[Any]] = {
    "scope": ["read", "upload", "build", "admin"],
    "name": ["api", "ci"],
    "project": ["demo", "Demo_Pkg"],
    "version": ["1.0", "2.0rc1"],
    "platforms": [["debian-12-py3.11-x86_64"]],
    "reason": ["because"],
    "lease": ["a" * 32],
    "worker": ["w1"],
    "runner": ["podman", "host"],
    "text": ["a log line\n"],
    "outcome": ["failed", "succeeded"],
    "error_category": ["other", "network"],
    "env": [{"CFLAGS": "-O2"}],
    "os_packages": [["libyaml-dev"]],
    "constraints": ["cython<3\n"],
    "build_command": [None, "make"],
}
NASTY_STRINGS = ("\x00", "a\x00b", "x" * 5000, "", " ", "../..", "\ud7ff", "\u202e")


@st.composite
def json_objects(draw: st.DrawFn, keys: tuple[str, ...]) -> dict[str, Any]:
    """Objects with the keys a handler reads, each absent, plausible, nasty (NUL, very long:
    what a database refuses) or of any JSON type; and a few other keys."""
    nasty = st.sampled_from(NASTY_STRINGS)
    obj: dict[str, Any] = {}
    for key in keys:
        if draw(st.integers(0, 4)) == 0:
            continue
        choices = [json_values, nasty, st.lists(nasty, max_size=3)]
        if key in PLAUSIBLE:
            choices = [st.sampled_from(PLAUSIBLE[key])] * 3 + choices
        obj[key] = draw(st.one_of(choices))
    obj.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    return obj


def json_bodies(keys: tuple[str, ...]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(content type, body): mostly JSON objects, sometimes other JSON or no JSON at all."""
    import json

    encoded = json_objects(keys).map(lambda o: json.dumps(o).encode())
    other = json_values.map(lambda v: json.dumps(v).encode())
    content_type = st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", ""]
    )
    body = st.one_of(encoded, encoded, other, st.binary(max_size=200))
    return st.tuples(content_type, body)


# --- the data directory -----------------------------------------------------------------------


def stray_files(data_dir: Path) -> list[str]:
    """Files in the data directory other than the database, the session key, and the
    storage's blobs and temporaries (``files/``): what a request must never leave."""
    found = []
    for path in data_dir.rglob("*"):
        relative = path.relative_to(data_dir)
        if relative.parts[0] == "files" or path.is_dir():
            continue
        if relative.name.startswith("wheelfarm.sqlite3") or str(relative) == "secret_key":
            continue
        found.append(str(relative))
    return found


def marked_paths(*roots: Path, depth: int = 3) -> list[str]:
    """Files or folders whose name contains MARKER, under each root (to ``depth`` levels)."""
    found: list[str] = []
    for root in roots:
        if not root.is_dir():
            continue
        for current, dirs, names in os.walk(root):
            level = len(Path(current).relative_to(root).parts)
            if level >= depth:
                dirs[:] = []
            dirs[:] = [d for d in dirs if d not in (".venv", ".git", "node_modules")]
            found += [os.path.join(current, n) for n in (*dirs, *names) if MARKER in n]
    return found


def blob_files_are_blobs(data_dir: Path) -> list[str]:
    """Every file under ``files/`` is a blob stored by its sha256 (or a storage temporary)."""
    import hashlib

    root = data_dir / "files"
    wrong = []
    if root.exists():
        for path in root.rglob("*"):
            if path.name.startswith(".") or not path.is_file():
                continue
            if hashlib.sha256(path.read_bytes()).hexdigest() != path.name:
                wrong.append(str(path.relative_to(root)))
    return wrong
