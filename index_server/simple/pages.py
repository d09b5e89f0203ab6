"""Building the page model of a platform's index from our own files."""

from __future__ import annotations

from collections.abc import Iterable

from packaging.version import InvalidVersion, Version

from index_server.repository import FileRecord
from index_server.simple.model import SimpleFile


def file_url(record: FileRecord, base: str) -> str:
    return f"{base}{record.sha256}/{record.filename}"


def format_upload_time(record: FileRecord) -> str:
    return record.uploaded_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_simple_file(record: FileRecord, files_base: str) -> SimpleFile:
    return SimpleFile(
        filename=record.filename,
        url=file_url(record, files_base),
        hashes={"sha256": record.sha256},
        requires_python=record.requires_python,
        yanked=(record.yanked_reason or "") if record.yanked else False,
        core_metadata={"sha256": record.metadata_sha256} if record.metadata_sha256 else False,
        size=record.size,
        upload_time=format_upload_time(record),
    )


def sorted_versions(versions: Iterable[str]) -> tuple[str, ...]:
    """Distinct versions, oldest first by PEP 440 order; unparsable ones last."""
    valid: dict[str, Version] = {}
    invalid: list[str] = []
    for text in dict.fromkeys(versions):
        try:
            valid[text] = Version(text)
        except InvalidVersion:
            invalid.append(text)
    return tuple(sorted(valid, key=valid.__getitem__)) + tuple(invalid)
