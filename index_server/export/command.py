"""``wheelfarm export``: a full export (repairs drift), or one then following the changes."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from client.logging_setup import configure_logging
from index_server.config import Settings
from index_server.export.exporter import Exporter
from index_server.export.targets import ExportBusy, ExportTarget, open_target
from index_server.services import build_services

log = logging.getLogger("wheelfarm.export")


def run_export(settings: Settings, target_url: str, follow: bool, poll: float) -> None:
    """Raises ExportBusy, ReadProtected or ValueError with a message for the command line."""
    configure_logging()
    services = build_services(settings)
    target = open_target(target_url, settings.page_max_age)
    exporter = Exporter(services, target)
    stopping: list[int] = []
    if follow:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda signum, frame: stopping.append(signum))
    try:
        with _held(target, follow):
            if follow:
                exporter.follow(poll, stop=lambda: bool(stopping))
            else:
                _, stats = exporter.full_export()
                log.info("export done %s target=%r", stats.line(), target)
    finally:
        services.engine.dispose()


@contextmanager
def _held(target: ExportTarget, follow: bool) -> Iterator[None]:
    """A one-off export refuses a target a follower is writing; a second follower waits
    (a standby that takes over when the first one stops)."""
    try:
        with target.hold(wait=False):
            yield
        return
    except ExportBusy:
        if not follow:
            raise
    log.info("export waiting: another exporter holds %r", target)
    with target.hold(wait=True):
        yield
