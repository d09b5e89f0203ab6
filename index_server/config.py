"""Settings, read from ``WHEELFARM_*`` environment variables (the CLI sets the same)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from platforms import DEFINITIONS_DIR

DEFAULT_UPSTREAM = "https://pypi.org/simple/"
# Where an upstream's pages are known to link its files: trusted with the upstream itself
# (PyPI's pages link to files.pythonhosted.org, which a mirror or test network may resolve
# to a non-public address as it does pypi.org).
UPSTREAM_FILE_HOSTS: dict[str, tuple[str, ...]] = {"pypi.org": ("files.pythonhosted.org",)}


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("wheelfarm-data")
    database_url: str = ""
    storage_url: str = ""
    admin_token: str | None = None
    upstream_urls: tuple[str, ...] = (DEFAULT_UPSTREAM,)
    platforms_dir: Path = DEFINITIONS_DIR
    read_requires_token: bool = False
    max_upload_bytes: int = 512 * 1024 * 1024
    page_max_age: int = 60
    upstream_ttl: int = 600  # seconds an upstream page is fresh
    upstream_404_ttl: int = 60  # seconds an upstream "not found" is believed
    upstream_timeout: float = 10.0  # seconds to wait for an upstream answer
    upstream_retry_after: int = 30  # after a failure, serve stale this long before retrying
    private_projects: tuple[str, ...] = ()  # names/globs never merged with an upstream
    # Non-public hosts the server may fetch from besides the upstreams' own (redirects, files).
    upstream_allowed_hosts: tuple[str, ...] = ()
    upstream_max_file_bytes: int = 4 * 1024**3
    build_lease_seconds: int = 60  # a worker must heartbeat within this, or lose its job
    # A platform's new build image queues its stale wheels' rebuilds at once.
    rebuild_on_image_change: bool = False
    # Proactive builds for every project with platform wheels, not only tracked ones.
    track_built_projects: bool = False
    # Resolution jobs (``wheelfarm warm`` of a requirements file): a stored closure is
    # reused for this long unless a page it used changes first; a resolution's time limit;
    # the largest requirements (plus constraints) text taken (larger: 413).
    resolution_ttl: int = 24 * 3600
    resolution_timeout: float = 600.0
    max_requirements_bytes: int = 256 * 1024
    first_sight_per_hour: int = 600  # new first-sight jobs per platform (anonymous downloads)
    max_json_bytes: int = 1024 * 1024  # a JSON request body (uploads have their own limit)
    trusted_proxies: int = 0  # proxies in front that set X-Forwarded-For/-Proto (ProxyFix)
    build_settings_file: Path | None = None  # per-project build settings, applied at start
    secret_key: str | None = None  # console sessions; share it between nodes (else per data dir)
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def upstream_hosts(self) -> frozenset[str]:
        """Hosts fetched from even if not public: the upstreams', their file hosts
        (:data:`UPSTREAM_FILE_HOSTS`) and the allowed ones."""
        from urllib.parse import urlsplit

        hosts = {(urlsplit(u).hostname or "").lower() for u in self.upstream_urls}
        hosts |= {f for h in hosts for f in UPSTREAM_FILE_HOSTS.get(h, ())}
        return frozenset(hosts | {h.lower() for h in self.upstream_allowed_hosts})

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'wheelfarm.sqlite3').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "files").resolve().as_uri()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if "WHEELFARM_DATA_DIR" in env:
            values["data_dir"] = Path(env["WHEELFARM_DATA_DIR"])
        if "WHEELFARM_DATABASE_URL" in env:
            values["database_url"] = env["WHEELFARM_DATABASE_URL"]
        if "WHEELFARM_STORAGE_URL" in env:
            values["storage_url"] = env["WHEELFARM_STORAGE_URL"]
        if env.get("WHEELFARM_ADMIN_TOKEN"):
            values["admin_token"] = env["WHEELFARM_ADMIN_TOKEN"]
        if "WHEELFARM_UPSTREAM_URL" in env:
            values["upstream_urls"] = parse_upstreams(env["WHEELFARM_UPSTREAM_URL"])
        if "WHEELFARM_PLATFORMS_DIR" in env:
            values["platforms_dir"] = Path(env["WHEELFARM_PLATFORMS_DIR"])
        if "WHEELFARM_READ_REQUIRES_TOKEN" in env:
            values["read_requires_token"] = parse_bool(env["WHEELFARM_READ_REQUIRES_TOKEN"])
        if "WHEELFARM_MAX_UPLOAD_BYTES" in env:
            values["max_upload_bytes"] = int(env["WHEELFARM_MAX_UPLOAD_BYTES"])
        if "WHEELFARM_PAGE_MAX_AGE" in env:
            values["page_max_age"] = int(env["WHEELFARM_PAGE_MAX_AGE"])
        for key, cast in _NUMBERS.items():
            if f"WHEELFARM_{key.upper()}" in env:
                values[key] = cast(env[f"WHEELFARM_{key.upper()}"])
        for key in ("rebuild_on_image_change", "track_built_projects"):
            if f"WHEELFARM_{key.upper()}" in env:
                values[key] = parse_bool(env[f"WHEELFARM_{key.upper()}"])
        if env.get("WHEELFARM_SECRET_KEY"):
            values["secret_key"] = env["WHEELFARM_SECRET_KEY"]
        if env.get("WHEELFARM_BUILD_SETTINGS_FILE"):
            values["build_settings_file"] = Path(env["WHEELFARM_BUILD_SETTINGS_FILE"])
        if "WHEELFARM_UPSTREAM_ALLOWED_HOSTS" in env:
            values["upstream_allowed_hosts"] = split_list(env["WHEELFARM_UPSTREAM_ALLOWED_HOSTS"])
        if "WHEELFARM_PRIVATE_PROJECTS" in env:
            values["private_projects"] = split_list(env["WHEELFARM_PRIVATE_PROJECTS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("upstream_urls"), str):
            values["upstream_urls"] = parse_upstreams(str(values["upstream_urls"]))
        return cls(**values)  # type: ignore[arg-type]


def parse_upstreams(value: str) -> tuple[str, ...]:
    """``none`` disables the upstream; several URLs are separated by spaces or commas."""
    if value.strip().lower() in ("", "none"):
        return ()
    return tuple(u if u.endswith("/") else u + "/" for u in split_list(value))


_NUMBERS = {
    "upstream_ttl": int,
    "upstream_404_ttl": int,
    "upstream_timeout": float,
    "upstream_retry_after": int,
    "build_lease_seconds": int,
    "first_sight_per_hour": int,
    "resolution_ttl": int,
    "resolution_timeout": float,
    "max_requirements_bytes": int,
    "max_json_bytes": int,
    "trusted_proxies": int,
    "upstream_max_file_bytes": int,
}


def split_list(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.replace(",", " ").split() if v)


def parse_bool(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")
