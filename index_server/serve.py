"""Running the app under gunicorn, the production WSGI server."""

from __future__ import annotations

import importlib.util
import logging
import logging.config
import os
import socket
from typing import Any

from gunicorn.app.base import BaseApplication

from client.logging_setup import logging_config
from index_server.config import Settings
from index_server.db.migrate import upgrade
from index_server.leftovers import remove_leftovers
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
        from client.logging_setup import configure_logging
        from index_server.app import create_app
        from index_server.services import build_services

        if "logconfig_dict" not in self.options:
            configure_logging()  # our format for this worker's own loggers

        from index_server.tracking import start_tracker

        # Each worker opens its own database engine after the fork.
        services = build_services(self.settings, migrate=False)
        start_tracker(services)  # proactive builds of tracked projects (index_server/tracking.py)
        return create_app(services=services)


def http_parser() -> str:
    """Which HTTP parser gunicorn uses: its C one when the ``fast`` extra is installed."""
    if importlib.util.find_spec("gunicorn_h1c") is not None:
        return "C (gunicorn_h1c)"
    return "Python (install wheelfarm[fast] for the C parser)"


class CannotListen(RuntimeError):
    pass


def check_address_free(host: str, port: int) -> None:
    """Refuse a host:port something already listens on.

    The workers bind with SO_REUSEPORT, which would let a second server (a stale one, say)
    share the port with this one and answer half of its clients: bind once without it.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind(address)
        except OSError as exc:
            raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def serve(
    settings: Settings, host: str, port: int, workers: int, threads: int, access_log: bool
) -> None:
    check_address_free(host, port)
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
    log.info("HTTP parser: %s", http_parser())
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
        # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new
        # connections evenly over the workers. On one shared socket, whichever worker woke
        # first took them: under a storm of keep-alive clients one worker held two thirds
        # of the connections and its clients waited twice as long as the others'.
        "reuse_port": True,
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
