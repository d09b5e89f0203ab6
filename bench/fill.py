"""Filling an index fast for the benchmark: bulk inserts into the real schema.

Rows go straight into ``projects`` and ``files`` (after the Alembic migrations, through
``build_services``), as ``ingest`` would have left them: canonical project names, binary
wheels under the platform's name, sdists and pure wheels under ``ALL_PLATFORMS``. Only the
files of one project (the download case) get real blobs in storage: pages never read blobs.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update

from index_server.config import Settings
from index_server.db.engine import write_transaction
from index_server.db.schema import ALL_PLATFORMS, files, index_state, projects
from index_server.distributions import parse_filename
from index_server.services import Services, build_services
from storage import blob_key

PLATFORM = "debian-12-py3.11-x86_64"
BIG_PROJECT = "Big-Project"  # display name; canonical "big-project"
CHUNK = 5000

# (packagetype, platform scope, filename suffix after "<name>-<version>")
SDIST = ("sdist", ALL_PLATFORMS, ".tar.gz")
PURE = ("bdist_wheel", ALL_PLATFORMS, "-py3-none-any.whl")
BIN_2014 = (
    "bdist_wheel",
    PLATFORM,
    "-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
)
BIN_228 = ("bdist_wheel", PLATFORM, "-cp311-cp311-manylinux_2_28_x86_64.whl")
BIN_ABI3 = ("bdist_wheel", PLATFORM, "-cp38-abi3-manylinux_2_17_x86_64.whl")

# Per version, the files a project of each kind releases: the kinds rotate over projects.
KINDS: tuple[tuple[tuple[str, str, str], ...], ...] = (
    (SDIST, PURE),  # pure Python
    (SDIST, BIN_2014, BIN_228, BIN_ABI3),  # compiled
    (SDIST, PURE, BIN_2014, BIN_228, BIN_ABI3),  # both
)


@dataclass
class FillResult:
    project_names: list[str]  # canonical names of the regular projects, in id order
    big_project: str | None  # canonical name of the big project, if any
    download_file: str  # filename of a small file with real bytes (in the first project)
    rows: int
    seconds: float
    files_per_project: dict[str, int] = field(default_factory=dict)


def canonical(display: str) -> str:
    return display.lower().replace("_", "-").replace(".", "-")


def project_display_name(i: int) -> str:
    return f"Bench-Project-{i:05d}"


def _fake_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _file_rows(
    project_id: int, display: str, count: int, kind: int, seed: int, start: datetime
) -> Iterator[dict[str, object]]:
    """``count`` file rows for a project, version after version, of the given kind."""
    dist_name = canonical(display).replace("-", "_")
    layout = KINDS[kind % len(KINDS)]
    with_requires_python = seed % 2 == 0
    with_metadata = seed % 4 != 3
    made = 0
    version_no = 0
    while made < count:
        version = f"{1 + version_no // 10}.{version_no % 10}.{seed % 7}"
        for packagetype, scope, suffix in layout:
            if made >= count:
                break
            filename = f"{dist_name}-{version}{suffix}"
            is_wheel = packagetype == "bdist_wheel"
            yanked = seed % 10 == 0 and version_no == 0
            yield {
                "project_id": project_id,
                "platform": scope,
                "filename": filename,
                "version": version,
                "packagetype": packagetype,
                "sha256": _fake_sha256(f"{scope}/{filename}"),
                "size": 2_000 + (seed * 7919 + made * 104_729) % 3_000_000,
                "requires_python": (f">=3.{8 + version_no % 3}" if with_requires_python else None),
                "metadata_sha256": (
                    _fake_sha256(f"metadata/{filename}") if is_wheel and with_metadata else None
                ),
                "yanked": yanked,
                "yanked_reason": "broken build" if yanked else None,
                "uploaded_at": start + timedelta(minutes=seed * 100 + made),
                "uploaded_by": "bench",
                "origin": "upload" if made % 3 else "build",
            }
            made += 1
        version_no += 1


def _insert_chunked(conn, table, rows: list[dict[str, object]]) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, len(rows), CHUNK):
        conn.execute(insert(table), rows[start : start + CHUNK])


def _store_download_blobs(services: Services, rows: list[dict[str, object]]) -> None:
    """Give one project's files real bytes, so downloading them works (small files)."""
    for row in rows:
        body = hashlib.sha512(str(row["filename"]).encode()).digest() * 64  # 4 KiB
        digest = hashlib.sha256(body).hexdigest()
        services.storage.put(blob_key(digest), io.BytesIO(body))
        row["sha256"] = digest
        row["size"] = len(body)


def fill_index(
    settings: Settings,
    n_projects: int,
    files_per_project: int,
    big_files: int,
) -> FillResult:
    """Create (migrate) the index in ``settings.data_dir`` and fill it; it must be empty."""
    import time

    began = time.perf_counter()
    services = build_services(settings)  # runs the Alembic migrations
    try:
        with services.engine.connect() as conn:
            existing = conn.execute(select(func.count()).select_from(projects)).scalar_one()
        if existing:
            raise SystemExit(f"{settings.data_dir} already holds {existing} projects")
        start = datetime(2024, 1, 1, tzinfo=UTC)
        now = datetime.now(UTC)
        serial = 1
        project_rows: list[dict[str, object]] = []
        file_rows: list[dict[str, object]] = []
        names: list[str] = []
        per_project: dict[str, int] = {}
        for i in range(n_projects):
            display = project_display_name(i)
            pid = i + 1
            project_rows.append(
                {
                    "id": pid,
                    "name": canonical(display),
                    "display_name": display,
                    "serial": serial,
                    "created_at": now,
                }
            )
            rows = list(_file_rows(pid, display, files_per_project, i, i, start))
            if i == 0:
                _store_download_blobs(services, rows)
            file_rows.extend(rows)
            names.append(canonical(display))
            per_project[canonical(display)] = len(rows)
        big = None
        if big_files:
            pid = n_projects + 1
            big = canonical(BIG_PROJECT)
            project_rows.append(
                {
                    "id": pid,
                    "name": big,
                    "display_name": BIG_PROJECT,
                    "serial": serial,
                    "created_at": now,
                }
            )
            rows = list(_file_rows(pid, BIG_PROJECT, big_files, 2, 1, start))
            file_rows.extend(rows)
            per_project[big] = len(rows)
        if "hosted" in projects.c:  # uploaded here: never merged with an upstream
            for row in project_rows:
                row["hosted"] = True
        _check_filenames(file_rows)
        with write_transaction(services.engine) as conn:
            _insert_chunked(conn, projects, project_rows)
            _insert_chunked(conn, files, file_rows)
            conn.execute(update(index_state).where(index_state.c.id == 1).values(serial=serial))
        return FillResult(
            project_names=names,
            big_project=big,
            download_file=str(file_rows[0]["filename"]) if n_projects else "",
            rows=len(file_rows),
            seconds=time.perf_counter() - began,
            files_per_project=per_project,
        )
    finally:
        services.engine.dispose()


def _check_filenames(rows: list[dict[str, object]]) -> None:
    """The generated names must be ones the index itself would accept (one per layout)."""
    from platforms import load_platforms

    platform = load_platforms()[PLATFORM]
    seen: set[str] = set()
    for row in rows:
        filename = str(row["filename"])
        suffix = filename.split("-", 1)[1].removeprefix(str(row["version"]))
        if suffix in seen:
            continue
        seen.add(suffix)
        dist = parse_filename(filename)
        scope = PLATFORM if dist.is_binary else ALL_PLATFORMS
        if scope != row["platform"] or dist.packagetype != row["packagetype"]:
            raise AssertionError(f"bad generated row for {filename}: {row}")
        if dist.is_binary and not platform.accepts(dist.tags):
            raise AssertionError(f"{filename} is not installable on {PLATFORM}")
