"""pip and uv through a live server that merges a local upstream, as image builds use it."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest

from tests.client_helpers import fresh_venv, pip, twine_upload, uv
from tests.conftest import LiveServer, start_server, stop_server
from tests.factory import make_sdist, make_wheel
from tests.upstream_server import FakeUpstream

PLATFORM = "debian-12-py3.11-x86_64"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream(mode="json")
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("proxy-server")
    dists = tmp / "dists"
    dists.mkdir()
    # Upstream-only dependency, with a big-ish wheel so concurrent pulls overlap.
    upstream.add(
        make_wheel(
            dists,
            "upstream-dep",
            "2.0",
            modules={"upstream_dep/__init__.py": "VALUE = 42\n" + "#" * 200_000},
        )
    )
    upstream.add(make_sdist(dists, "upstream-dep", "2.0"))
    upstream.add(make_wheel(dists, "upstream-dep", "1.0"))
    server = start_server(tmp / "data", tmp / "server.log", WHEELFARM_UPSTREAM_URL=upstream.url)
    app = make_wheel(
        dists,
        "local-app",
        "1.0",
        requires=["upstream-dep>=2"],
        modules={"local_app/__init__.py": "from upstream_dep import VALUE\n"},
    )
    twine_upload(server.url, PLATFORM, server.token("upload"), [app])
    yield server
    stop_server(server)


def test_pip_installs_local_package_with_upstream_only_dependency(
    server: LiveServer, upstream: FakeUpstream, tmp_path: Path
) -> None:
    venv = fresh_venv(tmp_path / "venv")
    pip("install", "--index-url", server.index(PLATFORM), "local-app", python=venv.python)
    assert venv.check_import("import local_app; print(local_app.VALUE)").strip() == "42"


def test_uv_installs_local_package_with_upstream_only_dependency(
    server: LiveServer, tmp_path: Path
) -> None:
    venv = fresh_venv(tmp_path / "venv")
    uv(
        "pip",
        "install",
        "--python",
        str(venv.python),
        "--index-url",
        server.index(PLATFORM),
        "local-app",
        cache_dir=tmp_path / "uv-cache",
    )
    assert venv.check_import("import local_app; print(local_app.VALUE)").strip() == "42"


def test_concurrent_requests_for_an_uncached_file_cause_one_download(
    server: LiveServer, upstream: FakeUpstream
) -> None:
    page_url = server.index(PLATFORM) + "upstream-dep/"
    html = urllib.request.urlopen(page_url).read().decode()
    filename = "upstream_dep-2.0.tar.gz"  # neither pip nor uv above needed it
    href = next(
        part.split('"')[0].split("#")[0] for part in html.split('href="')[1:] if filename in part
    )
    url = urljoin(page_url, href)
    upstream.delay = 0.5  # a slow upstream: the server's two workers get requests meanwhile
    bodies: list[bytes] = []

    def fetch() -> None:
        bodies.append(urllib.request.urlopen(url, timeout=60).read())

    try:
        threads = [threading.Thread(target=fetch) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        upstream.delay = 0
    assert len(bodies) == 6 and len(set(bodies)) == 1
    assert upstream.requests[f"/files/{filename}"] == 1
