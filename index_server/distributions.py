"""Reading distribution files: names from filenames, core metadata from archives.

Pure functions over files on disk; they raise :class:`InvalidDistribution` with a one-line
reason for anything a client must fix.
"""

from __future__ import annotations

import hashlib
import lzma
import operator
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from packaging.metadata import InvalidMetadata, Metadata, parse_email
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    canonicalize_version,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from platforms import is_pure

MAX_METADATA_BYTES = 4 * 1024 * 1024
MAX_ARCHIVE_MEMBERS = 200_000
# zipfile keeps ~270 bytes in memory per central directory entry (at least 46 bytes in the
# file): refuse a larger directory before it is read, whatever member count it claims.
MAX_ZIP_DIRECTORY_BYTES = 160 * MAX_ARCHIVE_MEMBERS
# A .tar.gz must be decompressed up to PKG-INFO: at most this many bytes, or this many times
# the file's size, whichever is more (a gzip bomb inflates ~1000 times).
MIN_TAR_SCAN_BYTES = 256 * 1024 * 1024
TAR_SCAN_RATIO = 16
_TAG_PARTS = operator.attrgetter("interpreter", "abi", "platform")
_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!\-]*$")


class InvalidDistribution(ValueError):
    """A file is not an acceptable distribution; the message says why in one line."""


@dataclass(frozen=True)
class DistributionName:
    filename: str
    project: NormalizedName
    version: Version
    packagetype: str  # "sdist" or "bdist_wheel"
    tags: frozenset[Tag]
    build: tuple[()] | tuple[int, str] = ()

    @property
    def key(self) -> str:
        """The distribution's identity as pip sees it, whatever the filename's spelling.

        Normalized name and version (``Alpha`` is ``alpha``, ``1.0.0`` is ``1.0``), the
        build tag and the wheel's tags in a fixed order; every sdist of a version is one.
        """
        name = self.project.replace("-", "_")
        version = canonicalize_version(self.version)
        if not self.is_wheel:
            return f"{name}-{version}.sdist"
        build = f"-{self.build[0]}{self.build[1]}" if self.build else ""
        parts = ("-".join(_TAG_PARTS(t)) for t in sorted(self.tags, key=str))
        key = f"{name}-{version}{build}-{'.'.join(parts)}"
        if len(key) > 300:  # many tags: the column holds 300, a digest keeps it unique
            key = key[:235] + "~" + hashlib.sha256(key.encode()).hexdigest()
        return key

    @property
    def is_wheel(self) -> bool:
        return self.packagetype == "bdist_wheel"

    @property
    def is_binary(self) -> bool:
        """A wheel tied to an OS or architecture (not ``any``)."""
        return self.is_wheel and not is_pure(self.tags)


@dataclass(frozen=True)
class CoreMetadata:
    raw: bytes  # METADATA or PKG-INFO, byte for byte
    name: str
    version: Version
    requires_python: str | None


def parse_filename(filename: str) -> DistributionName:
    """Name, version and kind of a distribution from its filename, checked for safety."""
    if len(filename) > 255 or not _SAFE_FILENAME.fullmatch(filename):
        raise InvalidDistribution(f"invalid filename {filename!r}")
    try:
        if filename.endswith(".whl"):
            name, version, build, tags = parse_wheel_filename(filename)
            return DistributionName(filename, name, version, "bdist_wheel", tags, build)
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return DistributionName(filename, name, version, "sdist", frozenset())
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise InvalidDistribution(f"invalid filename {filename!r}: {exc}") from None
    raise InvalidDistribution(
        f"unsupported file type {filename!r}: only wheels (.whl) and sdists (.tar.gz, .zip)"
    )


def read_core_metadata(path: Path, dist: DistributionName) -> CoreMetadata:
    """The archive's METADATA (wheel) or PKG-INFO (sdist), checked against its filename."""
    if dist.is_wheel:
        raw = _read_wheel_metadata(path, dist)
    elif dist.filename.endswith(".zip"):
        raw = _read_zip_sdist_metadata(path)
    else:
        raw = _read_tar_sdist_metadata(path)
    return _check_metadata(raw, dist)


def _read_wheel_metadata(path: Path, dist: DistributionName) -> bytes:
    with _open_zip(path) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise InvalidDistribution(
                f"wheel must contain exactly one .dist-info/METADATA, found {len(names)}"
            )
        _check_dist_info(names[0].split("/")[0], dist)
        return _read_zip_member(archive, names[0])


def _check_dist_info(directory: str, dist: DistributionName) -> None:
    """The ``<name>-<version>.dist-info`` folder is the filename's project and version: pip
    installs by it, so another name would install (and shadow) another project."""
    name, _, version = directory.removesuffix(".dist-info").rpartition("-")
    try:
        same_version = Version(version) == dist.version
    except InvalidVersion:
        same_version = False
    if canonicalize_name(name) != dist.project or not same_version:
        raise InvalidDistribution(
            f"{directory} does not match the filename's {dist.project} {dist.version}"
        )


def _read_zip_sdist_metadata(path: Path) -> bytes:
    with _open_zip(path) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+/PKG-INFO", n)]
        if len(names) != 1:
            raise InvalidDistribution("sdist must contain exactly one top-level PKG-INFO")
        return _read_zip_member(archive, names[0])


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        with path.open("rb") as fh:
            end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    except OSError:
        end = None
    if end and (
        end[zipfile._ECD_ENTRIES_TOTAL] > MAX_ARCHIVE_MEMBERS  # type: ignore[attr-defined]
        or end[zipfile._ECD_SIZE] > MAX_ZIP_DIRECTORY_BYTES  # type: ignore[attr-defined]
    ):
        raise InvalidDistribution(f"archive has more than {MAX_ARCHIVE_MEMBERS} members")
    try:
        archive = zipfile.ZipFile(path)
    # NotImplementedError: a member needs a newer zip version than zipfile reads
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise InvalidDistribution(f"not a valid zip archive: {exc}") from None
    if len(archive.infolist()) > MAX_ARCHIVE_MEMBERS:
        archive.close()
        raise InvalidDistribution(f"archive has more than {MAX_ARCHIVE_MEMBERS} members")
    return archive


def _read_zip_member(archive: zipfile.ZipFile, name: str) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > MAX_METADATA_BYTES:
        raise InvalidDistribution(f"{name} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        with archive.open(info) as member:
            data = member.read(MAX_METADATA_BYTES + 1)
    except (
        zipfile.BadZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
        RuntimeError,  # an encrypted member
        zlib.error,
        lzma.LZMAError,
    ) as exc:
        raise InvalidDistribution(f"cannot read {name}: {exc}") from None
    if len(data) > MAX_METADATA_BYTES:
        raise InvalidDistribution(f"{name} is larger than {MAX_METADATA_BYTES} bytes")
    return data


def _read_tar_sdist_metadata(path: Path) -> bytes:
    scan_limit = max(MIN_TAR_SCAN_BYTES, TAR_SCAN_RATIO * path.stat().st_size)
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            for count, member in enumerate(archive):
                if count >= MAX_ARCHIVE_MEMBERS:
                    raise InvalidDistribution(
                        f"archive has more than {MAX_ARCHIVE_MEMBERS} members"
                    )
                if member.offset_data + max(member.size, 0) > scan_limit:
                    raise InvalidDistribution(
                        f"no PKG-INFO in the first {scan_limit} bytes of the unpacked archive"
                    )
                if not re.fullmatch(r"[^/]+/PKG-INFO", member.name):
                    continue
                if not member.isfile():
                    raise InvalidDistribution("PKG-INFO is not a regular file")
                if member.size > MAX_METADATA_BYTES:
                    raise InvalidDistribution(f"PKG-INFO is larger than {MAX_METADATA_BYTES}")
                fh = archive.extractfile(member)
                if fh is None:
                    break
                return fh.read(MAX_METADATA_BYTES + 1)
    except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise InvalidDistribution(f"not a valid .tar.gz archive: {exc}") from None
    raise InvalidDistribution("sdist must contain a top-level PKG-INFO")


def _check_metadata(raw: bytes, dist: DistributionName) -> CoreMetadata:
    try:
        fields, _unparsed = parse_email(raw)
        meta = Metadata.from_raw(fields, validate=False)
        name, version = meta.name, meta.version
        requires_python = fields.get("requires_python")
    except (InvalidMetadata, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise InvalidDistribution(f"invalid core metadata: {_first_line(exc)}") from None
    except Exception as exc:  # packaging raises an ExceptionGroup for several problems
        raise InvalidDistribution(f"invalid core metadata: {_first_line(exc)}") from None
    if canonicalize_name(name) != dist.project:
        raise InvalidDistribution(
            f"metadata name {name!r} does not match filename project {dist.project!r}"
        )
    if version != dist.version:
        raise InvalidDistribution(
            f"metadata version {version} does not match filename version {dist.version}"
        )
    if requires_python is not None:
        try:
            SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise InvalidDistribution(f"invalid Requires-Python {requires_python!r}") from None
    return CoreMetadata(raw, name, version, requires_python)


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
