"""The server's collaborators, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from index_server.blob_cache import SmallBlobCache
from index_server.config import Settings
from index_server.db.engine import make_engine
from index_server.db.hot import HotQuery
from index_server.db.migrate import upgrade
from index_server.download_counts import DownloadCounter
from index_server.repository import (
    INDEX_SERIAL,
    PROJECT_STATE,
    SERVED_FILE,
    ProjectState,
    ServedFile,
)
from index_server.simple.cache import PageCache
from index_server.upstream.states import UPSTREAM_STATES, PageState, states_from_rows
from platforms import Platform, load_platforms
from storage import BlobStorage, open_storage


@dataclass
class Services:
    settings: Settings
    engine: Engine
    storage: BlobStorage
    platforms: dict[str, Platform]
    pages: PageCache = field(default_factory=PageCache)
    small_blobs: SmallBlobCache = field(default_factory=SmallBlobCache)
    downloads: DownloadCounter = field(default_factory=DownloadCounter)
    hot: HotQueries = field(init=False)

    def __post_init__(self) -> None:
        self.hot = HotQueries(self.engine)


class HotQueries:
    """The lookups every page request makes, compiled once for this engine."""

    def __init__(self, engine: Engine) -> None:
        self._project_state = HotQuery(engine, PROJECT_STATE)
        self._served_file = HotQuery(engine, SERVED_FILE)
        self._index_serial = HotQuery(engine, INDEX_SERIAL)
        self._upstream_states = HotQuery(engine, UPSTREAM_STATES)

    def project_state(self, name: str) -> ProjectState | None:
        row = self._project_state.first(name=name)
        return ProjectState(*row) if row else None

    def upstream_states(self, project: str) -> dict[str, PageState]:
        return states_from_rows(self._upstream_states.all(project=project))

    def index_serial(self) -> int:
        row = self._index_serial.first()
        assert row is not None
        return int(row[0])

    def served_file(self, sha256: str, filename: str) -> ServedFile | None:
        row = self._served_file.first(sha256=sha256, filename=filename)
        return ServedFile(*row) if row else None


def build_services(settings: Settings, migrate: bool = True) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if migrate:
        upgrade(url)
    return Services(
        settings=settings,
        engine=make_engine(url),
        storage=open_storage(settings.resolved_storage_url),
        platforms=load_platforms(settings.platforms_dir),
    )
