"""Accepting a distribution file: validate, store the bytes, then record it.

The order makes a crash harmless: blobs are written (atomically) before the row that lists
them is committed, so a listed file always has its bytes; a crash in between leaves only an
unlisted blob.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from index_server import owners, repository
from index_server.auth import Identity
from index_server.db.engine import read_connection, write_transaction
from index_server.db.schema import ALL_PLATFORMS
from index_server.distributions import (
    DistributionName,
    InvalidDistribution,
    parse_filename,
    read_core_metadata,
)
from index_server.repository import FileRecord
from index_server.services import Services
from index_server.upstream import pages as upstream_pages
from platforms import Platform
from storage import blob_key

SUPPORTED_DIGESTS = ("sha256", "blake2_256", "md5")


class FileConflict(Exception):
    """The filename exists with other content: files are immutable."""


@dataclass(frozen=True)
class IngestResult:
    file: FileRecord
    created: bool


def file_digests(path: Path) -> dict[str, str]:
    hashers = {
        "sha256": hashlib.sha256(),
        "blake2_256": hashlib.blake2b(digest_size=32),
        "md5": hashlib.md5(usedforsecurity=False),
    }
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def ingest_file(
    services: Services,
    platform: Platform,
    path: Path,
    filename: str,
    *,
    actor: str,
    claimed_digests: Mapping[str, str] | None = None,
    claimed_name: str | None = None,
    claimed_version: str | None = None,
    origin: str = "upload",
    uploader: Identity | None = None,
    build_job_id: int | None = None,
) -> IngestResult:
    """Store a file. ``uploader`` (an upload's token) must be allowed by ``owners.claim``
    in the same transaction; ``build_job_id`` is the build job a worker's wheel is from."""
    dist = parse_filename(filename)
    _check_claims(dist.project, str(dist.version), claimed_name, claimed_version)
    digests = file_digests(path)
    _check_digests(digests, claimed_digests or {})
    if dist.is_binary and not platform.accepts(dist.tags):
        raise InvalidDistribution(
            f"{filename} cannot be installed on platform {platform.name} "
            f"(its best tag is {platform.supported_tags[0]})"
        )
    scope = platform.name if dist.is_binary else ALL_PLATFORMS
    sha256 = digests["sha256"]

    existing = _existing(services, scope, dist, sha256)
    if existing:
        return IngestResult(existing, created=False)

    meta = read_core_metadata(path, dist)
    metadata_sha256 = None
    storage = services.storage
    key = blob_key(sha256)
    if not storage.exists(key):
        with path.open("rb") as fh:
            storage.put(key, fh)
    if dist.is_wheel:
        metadata_sha256 = hashlib.sha256(meta.raw).hexdigest()
        meta_key = blob_key(metadata_sha256)
        if not storage.exists(meta_key):
            storage.put(meta_key, io.BytesIO(meta.raw))

    try:
        with write_transaction(services.engine) as conn:
            serial = repository.next_serial(conn)
            project_id = repository.ensure_project(
                conn, dist.project, meta.name, serial, hosted=origin == "upload"
            )
            if uploader is not None:
                owners.claim(conn, dist.project, uploader, actor)
            upstream_pages.expire(conn, dist.project)
            file_id = repository.add_file(
                conn,
                project_id,
                platform=scope,
                filename=filename,
                dist_key=dist.key,
                version=str(dist.version),
                packagetype=dist.packagetype,
                sha256=sha256,
                size=path.stat().st_size,
                requires_python=meta.requires_python,
                metadata_sha256=metadata_sha256,
                yanked=False,
                yanked_reason=None,
                uploaded_at=_now(),
                uploaded_by=actor[:200],
                origin=origin,
                build_job_id=build_job_id,
            )
            repository.record_event(
                conn, actor, f"add ({origin})", dist.project, filename, f"platform={scope or '*'}"
            )
            record = repository.get_file(conn, file_id)
    except IntegrityError:
        # Someone else stored the same filename between our check and our insert.
        existing = _existing(services, scope, dist, sha256)
        if existing:
            return IngestResult(existing, created=False)
        raise
    assert record is not None
    # A delete of another file with the same bytes may have removed the blob between our
    # exists() check and our commit: put it back, so a listed file always has its bytes.
    if not storage.exists(key):
        with path.open("rb") as fh:
            storage.put(key, fh)
    if metadata_sha256 and not storage.exists(blob_key(metadata_sha256)):
        storage.put(blob_key(metadata_sha256), io.BytesIO(meta.raw))
    return IngestResult(record, created=True)


def _existing(
    services: Services, scope: str, dist: DistributionName, sha256: str
) -> FileRecord | None:
    """The stored file pip would take for this one (same bytes: kept), or a conflict.

    Identity is what pip sees (see ``DistributionName.key``), not the filename's spelling;
    a deleted file's identity stays taken by its bytes (a tombstone).
    """
    with read_connection(services.engine) as conn:
        existing = repository.find_distribution(conn, scope, dist.key)
        deleted = repository.tombstone_conflict(conn, scope, dist.key, sha256)
    if existing and existing.sha256 != sha256:
        raise FileConflict(
            f"{dist.filename} already exists with different content (as {existing.filename}: "
            "pip takes them for one distribution); files are immutable: upload a new version"
        )
    if deleted:
        raise FileConflict(
            f"{dist.filename}: {deleted} was deleted; a deleted distribution can come back "
            "only byte for byte: upload a new version"
        )
    return existing


def _check_claims(
    project: str, version: str, claimed_name: str | None, claimed_version: str | None
) -> None:
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    if claimed_name and canonicalize_name(claimed_name) != project:
        raise InvalidDistribution(f"form name {claimed_name!r} does not match the filename")
    if claimed_version:
        try:
            same = Version(claimed_version) == Version(version)
        except InvalidVersion:
            same = False
        if not same:
            raise InvalidDistribution(
                f"form version {claimed_version!r} does not match the filename"
            )


def _check_digests(actual: Mapping[str, str], claimed: Mapping[str, str]) -> None:
    for name in SUPPORTED_DIGESTS:
        value = (claimed.get(name) or "").strip().lower()
        if value and value != actual[name]:
            raise InvalidDistribution(f"{name} digest does not match the uploaded content")


def _now() -> datetime:
    return datetime.now(UTC)
