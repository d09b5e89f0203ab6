"""Admin actions on files: yank, unyank, delete. Each is recorded in the audit log."""

from __future__ import annotations

from index_server import repository
from index_server.db.engine import write_transaction
from index_server.repository import FileRecord
from index_server.services import Services
from index_server.upstream import pages as upstream_pages
from storage import blob_key


class NotFound(LookupError):
    pass


def _require(conn, file_id: int) -> FileRecord:  # type: ignore[no-untyped-def]
    record = repository.get_file(conn, file_id)
    if record is None:
        raise NotFound(f"no file with id {file_id}")
    return record


def yank_file(services: Services, file_id: int, reason: str | None, actor: str) -> FileRecord:
    return _set_yanked(services, file_id, True, reason, actor)


def unyank_file(services: Services, file_id: int, actor: str) -> FileRecord:
    return _set_yanked(services, file_id, False, None, actor)


def _set_yanked(
    services: Services, file_id: int, yanked: bool, reason: str | None, actor: str
) -> FileRecord:
    with write_transaction(services.engine) as conn:
        record = _require(conn, file_id)
        serial = repository.next_serial(conn)
        repository.set_yanked(conn, file_id, yanked, reason)
        _touch(conn, record, serial)
        repository.record_event(
            conn, actor, "yank" if yanked else "unyank", record.project, record.filename, reason
        )
        updated = repository.get_file(conn, file_id)
    assert updated is not None
    return updated


def delete_file(
    services: Services, file_id: int, actor: str, *, tombstone: bool = True
) -> FileRecord:
    """Delete a file. ``tombstone`` False only where the server itself replaces the file: a
    platform's own wheel rebuilt on its new build image (platform_lifecycle)."""
    with write_transaction(services.engine) as conn:
        record = _require(conn, file_id)
        serial = repository.next_serial(conn)
        if tombstone:  # PyPI's rule: never other bytes again under this name
            repository.add_tombstone(conn, file_id, actor)
        repository.delete_file_row(conn, file_id)
        _touch(conn, record, serial)
        repository.record_event(conn, actor, "delete", record.project, record.filename)
    # Bytes go only after the row is gone, and only if no other file shares them.
    with write_transaction(services.engine) as conn:
        for digest in filter(None, (record.sha256, record.metadata_sha256)):
            if not repository.digest_in_use(conn, digest):
                services.storage.delete(blob_key(digest))
    return record


def _touch(conn, record: FileRecord, serial: int) -> None:  # type: ignore[no-untyped-def]
    state = repository.project_state(conn, record.project)
    if state:
        repository.touch_project(conn, state.id, serial)
    upstream_pages.expire(conn, record.project)
