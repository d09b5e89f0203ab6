"""App factories for the peers of bench/bench_peers.py, run in the peers' own venvs (they
import nothing of wheelfarm). The data set's folder comes in ``BENCH_PEER_ROOT``."""

from __future__ import annotations

import os


def simple_repository_app():  # type: ignore[no-untyped-def]
    """simple-repository-server's own app (its ``__main__``) over the local folder."""
    from simple_repository_server.__main__ import create_app

    return create_app([os.environ["BENCH_PEER_ROOT"]])
