"""The server's collaborators, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from index_server.config import Settings
from index_server.db.engine import make_engine
from index_server.db.migrate import upgrade
from index_server.simple.cache import PageCache
from platforms import Platform, load_platforms
from storage import BlobStorage, open_storage


@dataclass
class Services:
    settings: Settings
    engine: Engine
    storage: BlobStorage
    platforms: dict[str, Platform]
    pages: PageCache = field(default_factory=PageCache)


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
