"""Running the app under gunicorn, the production WSGI server."""

from __future__ import annotations

import logging
import logging.config
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from index_server.config import Settings
from index_server.db.migrate import upgrade
from index_server.leftovers import remove_leftovers
from index_server.logging_setup import logging_config
from storage import StorageError

# gunicorn's default access line without ``%(u)s``, the basic-auth user name: pip sends
# the token itself as the user name when the index URL has no password (https://TOKEN@host/).
ACCESS_LOG_FORMAT = '%(h)s %(l)s - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

log = logging.getLogger("wheelfarm.serve")


def default_workers() -> int:
    return max(2, os.cpu_count() or 1)


class WheelfarmServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from index_server.app import create_app
        from index_server.logging_setup import configure_logging
        from index_server.services import build_services

        if "logconfig_dict" not in self.options:
            configure_logging()  # our format for this worker's own loggers

        # Each worker opens its own database engine after the fork.
        return create_app(services=build_services(self.settings, migrate=False))


def serve(
    settings: Settings, host: str, port: int, workers: int, threads: int, access_log: bool
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    if settings.build_settings_file:
        from index_server.build_settings_file import apply_settings_file
        from index_server.services import build_services

        services = build_services(settings, migrate=False)
        projects = apply_settings_file(services, settings.build_settings_file)
        services.engine.dispose()
        print(f"build settings from {settings.build_settings_file}: {', '.join(projects)}")
    _configure_master_logging()
    _remove_leftovers(settings)
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": 120,
        "graceful_timeout": 20,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "forwarded_allow_ips": "127.0.0.1",
        "control_socket_disable": True,
    }
    if access_log:
        # With a logconfig, gunicorn formats an access line for every request: only then.
        options["logconfig_dict"] = logging_config(gunicorn_access=True)
    WheelfarmServer(settings, options).run()


def _configure_master_logging() -> None:
    """Our format for the master's own lines; gunicorn's loggers keep gunicorn's handlers
    (configuring them here too would print each of its lines twice)."""
    logging.config.dictConfig({**logging_config(), "loggers": {}})


def _remove_leftovers(settings: Settings) -> None:
    """Once, before any worker exists: what killed servers left behind. A failure (say, no
    permission to list multipart uploads) is logged, and the server starts anyway."""
    try:
        remove_leftovers(settings)
    except (StorageError, OSError) as exc:
        log.warning("could not remove stale leftovers: %s", exc)
