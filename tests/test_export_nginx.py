"""The exported read path for real: a live server, ``wheelfarm export --follow`` and Debian's
nginx with the shipped config (deploy/nginx/), used by pip, uv and twine."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.worker import ServerClient
from index_server.config import Settings
from platforms import load_platforms
from tests.client_helpers import api, file_id, fresh_venv, pip, raw_get, twine_upload, uv
from tests.conftest import LiveServer, start_server, stop_server
from tests.export_helpers import (
    Nginx,
    start_exporter,
    start_nginx,
    stop_nginx,
    stop_process,
    wait_for_export,
)
from tests.factory import make_sdist, make_wheel

PLATFORM = "debian-12-py3.11-x86_64"
JSON_CT = "application/vnd.pypi.simple.v1+json"
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
VISIBLE_WITHIN = 1.0  # seconds, the promise


@dataclass
class ReadPath:
    server: LiveServer
    nginx: Nginx
    export: Path
    token: str

    def page_url(self, project: str) -> str:
        return f"{self.nginx.url}/{PLATFORM}/simple/{project}/"

    def exported_json(self, project: str) -> dict | None:
        """The project page as nginx serves it from the export (None if not exported)."""
        response = raw_get(self.page_url(project), {"Accept": PIP_ACCEPT})
        if response.status != 200 or response.headers.get("X-PyPI-Last-Serial"):
            return None  # a 404, or the server's answer: not (yet) in the export
        return json.loads(response.body)


@pytest.fixture(scope="module")
def read_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadPath]:
    root = tmp_path_factory.mktemp("export-read-path")
    server = start_server(root / "data", root / "server.log")
    export = root / "export"
    exporter = start_exporter(server, export, root / "exporter.log")
    try:
        wait_for_export(root / "exporter.log", exporter)
        nginx = start_nginx(root / "nginx", export, server.url)
        try:
            yield ReadPath(server, nginx, export, server.token("upload"))
        finally:
            stop_nginx(nginx)
    finally:
        stop_process(exporter)
        stop_server(server)


def _visible(check: Callable[[], bool], seconds: float = 10) -> float:
    """Seconds until ``check`` holds (polled every 10 ms); fails after ``seconds``."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > seconds:
            raise AssertionError(f"not visible after {seconds}s")
        time.sleep(0.01)
    return time.monotonic() - began


def _filenames(path: ReadPath, project: str) -> dict[str, bool | str]:
    page = path.exported_json(project)
    return {f["filename"]: f["yanked"] for f in page["files"]} if page else {}


def test_pip_and_uv_install_through_the_export(read_path: ReadPath, tmp_path: Path) -> None:
    dep = make_wheel(tmp_path, "export-dep", "1.0")
    top = make_wheel(tmp_path, "export-top", "2.0", requires=["export-dep>=1"])
    twine_upload(read_path.nginx.url, PLATFORM, read_path.token, [dep, top])  # through nginx
    _visible(lambda: bool(_filenames(read_path, "export-top")))
    _visible(lambda: bool(_filenames(read_path, "export-dep")))

    before = len(read_path.nginx.served())  # our own polls until the export had them
    venv = fresh_venv(tmp_path / "pip-venv")
    index = f"{read_path.nginx.url}/{PLATFORM}/simple/"
    pip("install", "--index-url", index, "export-top", python=venv.python)
    assert venv.check_import("import export_top, export_dep; print(export_top.__version__)") == (
        "2.0\n"
    )
    uv_venv = fresh_venv(tmp_path / "uv-venv")
    uv(
        "pip", "install", "--python", uv_venv.python, "--index-url", index, "export-top",
        cache_dir=tmp_path / "uv-cache",
    )  # fmt: skip
    assert uv_venv.check_import("import export_top; print(export_top.__version__)") == "2.0\n"

    # Both read the pages, metadata and wheels from the export: nginx passed none of those
    # requests to the server.
    served = read_path.nginx.served()[before:]
    served = [r for r in served if "/export-" in r[1] and r[0] == "GET"]
    assert served, read_path.nginx.served()
    reads = [r for r in served if "/simple/" in r[1] or "/files/" in r[1]]
    assert {r[1].rsplit("/", 1)[-1] for r in reads if "/files/" in r[1]} >= {
        "export_top-2.0-py3-none-any.whl",
        "export_dep-1.0-py3-none-any.whl",
    }
    assert all(r[3] == "-" and r[2] == "200" for r in reads), reads


def test_pages_headers_negotiation_and_misses(read_path: ReadPath, tmp_path: Path) -> None:
    twine_upload(
        read_path.nginx.url, PLATFORM, read_path.token, [make_wheel(tmp_path, "Export.Hdr", "1.0")]
    )
    _visible(lambda: bool(_filenames(read_path, "export-hdr")))
    url = read_path.page_url("export-hdr")
    as_json = raw_get(url, {"Accept": PIP_ACCEPT})
    assert as_json.headers["Content-Type"] == JSON_CT
    assert "Accept" in as_json.headers["Vary"]
    server_json = raw_get(
        url.replace(read_path.nginx.url, read_path.server.url), {"Accept": JSON_CT}
    )
    assert as_json.body == server_json.body  # the export is the server's page, byte for byte
    as_html = raw_get(url)
    assert as_html.headers["Content-Type"] == "text/html; charset=utf-8"
    assert as_html.body.startswith(b"<!DOCTYPE html>")
    browser = raw_get(url, {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.body == as_html.body
    # Conditional requests: nginx's ETag, a 304 for it.
    etag = as_json.headers["ETag"]
    assert raw_get(url, {"Accept": PIP_ACCEPT, "If-None-Match": etag}).status == 304
    zipped = raw_get(url, {"Accept": PIP_ACCEPT, "Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == as_json.body
    # What nginx cannot decide goes to the server: q-values it would have to weigh, a
    # format parameter, an unnormalized name (301), a project never exported (404).
    weighed = raw_get(url, {"Accept": "text/html;q=0.5, application/vnd.pypi.simple.v1+json"})
    assert weighed.headers["X-PyPI-Last-Serial"] and weighed.headers["Content-Type"] == JSON_CT
    assert raw_get(url + "?format=json").headers["X-PyPI-Last-Serial"]
    assert raw_get(f"{read_path.nginx.url}/{PLATFORM}/simple/Export.Hdr/").status == 301
    assert raw_get(read_path.page_url("never-heard-of")).status == 404
    refused = raw_get(url, {"Accept": "application/json"})
    assert refused.status == 406
    # Files: immutable, with the server's content types.
    entry = json.loads(as_json.body)["files"][0]
    file_url = url + entry["url"]
    wheel = raw_get(file_url)
    assert wheel.headers["Content-Type"] == "application/zip"
    assert "immutable" in wheel.headers["Cache-Control"]
    metadata = raw_get(file_url + ".metadata")
    assert metadata.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert metadata.body.startswith(b"Metadata-Version")


def test_every_write_is_visible_in_the_export_within_a_second(
    read_path: ReadPath, tmp_path: Path
) -> None:
    timings: dict[str, float] = {}
    wheel = make_wheel(tmp_path, "export-live", "1.0")
    twine_upload(read_path.server.url, PLATFORM, read_path.token, [wheel])
    timings["upload"] = _visible(lambda: wheel.name in _filenames(read_path, "export-live"))

    fid = file_id(read_path.server.url, "export-live", wheel.name)
    api(read_path.server.url, "POST", f"/api/files/{fid}/yank", {"reason": "broken"})
    timings["yank"] = _visible(
        lambda: _filenames(read_path, "export-live").get(wheel.name) == "broken"
    )
    api(read_path.server.url, "POST", f"/api/files/{fid}/unyank")
    timings["unyank"] = _visible(
        lambda: _filenames(read_path, "export-live").get(wheel.name) is False
    )

    # A build finishing: the wheel a worker uploads through the worker protocol.
    sdist = make_sdist(tmp_path, "export-built", "1.0")
    twine_upload(read_path.server.url, PLATFORM, read_path.token, [sdist])
    api(
        read_path.server.url, "POST", "/api/builds",
        {"project": "export-built", "version": "1.0", "platforms": [PLATFORM]},
    )  # fmt: skip
    worker = ServerClient(read_path.server.url, read_path.server.token("build"))
    job = worker.claim("export-test-worker", [PLATFORM], "host")
    assert job is not None and job["project"] == "export-built"
    platform = load_platforms()[PLATFORM]
    tag = f"{platform.interpreter}-{platform.interpreter}-{platform.platform_tags()[0]}"
    (tmp_path / "out").mkdir()
    built = make_wheel(tmp_path / "out", "export-built", "1.0", tag=tag)
    worker.upload_wheel(job, built)
    worker.finish(job, {"outcome": "succeeded", "wheels": [built.name], "build_seconds": 0.1})
    timings["build finished"] = _visible(
        lambda: built.name in _filenames(read_path, "export-built")
    )
    # ...and the sdist, whose download no longer queues a first-sight build, is exported.
    sdist_url = f"{read_path.export}/{PLATFORM}/files/export-built"
    timings["sdist"] = _visible(
        lambda: any(p.name == sdist.name for p in Path(sdist_url).rglob("*"))
    )
    worker.session.close()

    api(read_path.server.url, "DELETE", f"/api/files/{fid}")
    timings["delete"] = _visible(
        lambda: raw_get(read_path.page_url("export-live"), {"Accept": PIP_ACCEPT}).status == 404
    )
    print("visible after (s):", {k: round(v, 3) for k, v in timings.items()})
    late = {k: v for k, v in timings.items() if v > VISIBLE_WITHIN}
    assert not late, f"visible later than {VISIBLE_WITHIN}s: {late}"
    assert not list((read_path.export / PLATFORM / "files").glob("export-live"))


# --- a killed exporter ----------------------------------------------------------------


def _fill(server: LiveServer) -> None:
    from bench.fill import fill_index

    fill_index(Settings.from_env(server.env), n_projects=120, files_per_project=60, big_files=1500)


def _page_count(export: Path) -> int:
    return sum(1 for p in export.rglob("index.*") if not p.name.endswith(".gz"))


def _check_complete(export: Path) -> int:
    """Every page parses completely, and so does its .gz twin; returns the pages seen."""
    pages = 0
    for path in export.rglob("index.*"):
        if path.name.endswith(".gz"):
            continue
        body = path.read_bytes()
        if path.suffix == ".json":
            json.loads(body)
        else:
            assert body.endswith(b"</html>\n"), path
        twin = path.with_name(path.name + ".gz")
        assert gzip.decompress(twin.read_bytes()) == body, twin
        pages += 1
    return pages


def test_a_killed_exporter_leaves_no_half_page(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", tmp_path / "server.log")
    nginx = None
    try:
        _fill(server)
        export = tmp_path / "export"
        log = tmp_path / "exporter.log"
        rng = random.Random(17)
        killed_with_temporaries = 0
        seen: list[int] = []
        for _attempt in range(4):
            exporter = start_exporter(server, export, log, follow=False)
            # Until it writes pages the killed ones did not (a full export takes seconds;
            # unchanged pages are not rewritten), then at a random moment after that.
            before = _page_count(export)
            _visible(lambda before=before: _page_count(export) > before, seconds=120)
            time.sleep(rng.random() * 0.3)
            os.kill(exporter.pid, signal.SIGKILL)
            exporter.wait()
            seen.append(_check_complete(export))
            leftovers = list((export / ".tmp").glob("*-*"))
            killed_with_temporaries += bool(leftovers)
        # Every project has sdists: a page (and its .gz) on each platform, and each root.
        total = 2 * len(load_platforms()) * (1 + 121)
        assert 0 < seen[0] < seen[-1] < total, seen  # every kill came mid-export
        # What a kill between a temporary's write and its rename leaves (if none did here).
        (export / ".tmp" / "page-interrupted").write_bytes(b'{"meta": {"api-ver')
        nginx = start_nginx(tmp_path / "nginx", export, server.url)
        for leftover in (export / ".tmp").glob("*-*"):
            # Never served: nginx hands dot paths to the server, which knows no such page.
            assert raw_get(f"{nginx.url}/.tmp/{leftover.name}").status == 404
        # A full export afterwards repairs everything and removes the temporaries.
        exporter = start_exporter(server, export, log, follow=False)
        assert exporter.wait(300) == 0, log.read_text()
        assert not list((export / ".tmp").glob("*-*"))
        assert _check_complete(export) == total
        big = raw_get(f"{nginx.url}/{PLATFORM}/simple/big-project/", {"Accept": PIP_ACCEPT})
        assert len(json.loads(big.body)["files"]) == 1500
        print("pages after each kill:", seen, "kills leaving temporaries:", killed_with_temporaries)
    finally:
        if nginx is not None:
            stop_nginx(nginx)
        stop_server(server)
