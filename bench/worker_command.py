"""The command line of a real Podman build worker for the benches (bench_farm, bench_warm)."""

from __future__ import annotations

from tests.conftest import BIN

PLATFORM = "debian-12-py3.11-x86_64"


def podman_worker(server_url: str, token: str, name: str, platform: str = PLATFORM) -> list[str]:
    """``wheelfarm worker`` for ``platform`` with the podman runner, polling every 0.2 s."""
    return [
        str(BIN / "wheelfarm"),
        "worker",
        "--server",
        server_url,
        "--token",
        token,
        "--runner",
        "podman",
        "--platform",
        platform,
        "--poll",
        "0.2",
        "--name",
        name,
    ]
