"""A local upstream index for the tests: pages and files they make, requests counted.

Serves PEP 691 JSON or PEP 503 HTML (``mode``), answers If-None-Match with 304, and can be
made slow, failing (HTTP 503), or to serve tampered bytes.
"""

from __future__ import annotations

import hashlib
import html
import json
import threading
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

if TYPE_CHECKING:
    from index_server.services import Services


@dataclass
class UpstreamFile:
    filename: str
    data: bytes
    metadata: bytes | None
    requires_python: str | None = None
    yanked: str | bool = False
    upload_time: str = "2024-01-02T03:04:05.000000Z"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _project_of(filename: str) -> str:
    if filename.endswith(".whl"):
        return parse_wheel_filename(filename)[0]
    return parse_sdist_filename(filename)[0]


def _wheel_metadata(path: Path) -> bytes | None:
    if not path.name.endswith(".whl"):
        return None
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name)


class FakeUpstream:
    def __init__(self, mode: str = "json") -> None:
        self.mode = mode
        self.projects: dict[str, list[UpstreamFile]] = {}
        self.requests: Counter[str] = Counter()
        self.down = False
        self.delay = 0.0
        self.tampered: set[str] = set()
        self.closed = False
        # Where the pages say the files are (relative to the page, or another host's URL).
        self.files_url = "../../files/"
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple/"

    def close(self) -> None:
        # Kept-alive connections have handler threads of their own: make them hang up too.
        self.closed = True
        self._server.shutdown()
        self._server.server_close()

    def add(self, path: Path, **extra: object) -> UpstreamFile:
        entry = UpstreamFile(path.name, path.read_bytes(), _wheel_metadata(path), **extra)  # type: ignore[arg-type]
        with self._lock:
            self.projects.setdefault(_project_of(path.name), []).append(entry)
        return entry

    def count(self, prefix: str) -> int:
        return sum(n for path, n in self.requests.items() if path.startswith(prefix))

    def page_path(self, project: str) -> str:
        return f"/simple/{project}/"

    def _page(self, project: str) -> tuple[bytes, str] | None:
        files = self.projects.get(project)
        if files is None:
            return None
        if self.mode == "json":
            body = {
                "meta": {"api-version": "1.1"},
                "name": project,
                "files": [
                    {
                        "filename": f.filename,
                        "url": f"{self.files_url}{f.filename}",
                        "hashes": {"sha256": f.sha256},
                        "requires-python": f.requires_python,
                        "yanked": f.yanked,
                        "core-metadata": (
                            {"sha256": hashlib.sha256(f.metadata).hexdigest()}
                            if f.metadata
                            else False
                        ),
                        "size": len(f.data),
                        "upload-time": f.upload_time,
                    }
                    for f in files
                ],
                "versions": [],
            }
            return json.dumps(body).encode(), "application/vnd.pypi.simple.v1+json"
        links = []
        for f in files:
            attrs = [f'href="{self.files_url}{f.filename}#sha256={f.sha256}"']
            if f.requires_python:
                attrs.append(f'data-requires-python="{html.escape(f.requires_python)}"')
            if f.yanked is not False:
                reason = f.yanked if isinstance(f.yanked, str) else ""
                attrs.append(f'data-yanked="{html.escape(reason)}"')
            if f.metadata:
                digest = hashlib.sha256(f.metadata).hexdigest()
                attrs.append(f'data-dist-info-metadata="sha256={digest}"')
            links.append(f"<a {' '.join(attrs)}>{f.filename}</a><br>")
        body = "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>"
        return body.encode(), "text/html"

    def _file(self, name: str) -> bytes | None:
        metadata = name.endswith(".metadata")
        filename = name.removesuffix(".metadata")
        for files in self.projects.values():
            for f in files:
                if f.filename == filename:
                    data = f.metadata if metadata else f.data
                    if data is not None and filename in self.tampered and not metadata:
                        data = data[:-1] + bytes([data[-1] ^ 1])
                    return data
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(
                self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body and self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if upstream.closed:
                    self.close_connection = True
                    return
                with upstream._lock:
                    upstream.requests[path] += 1
                if upstream.delay:
                    time.sleep(upstream.delay)
                if upstream.down:
                    self._send(503, b"down for maintenance")
                    return
                if path.startswith("/simple/"):
                    project = canonicalize_name(path.removeprefix("/simple/").strip("/"))
                    page = upstream._page(project)
                    if page is None:
                        self._send(404, b"not found")
                        return
                    body, content_type = page
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    if self.headers.get("If-None-Match") == etag:
                        self._send(304, headers={"ETag": etag})
                        return
                    self._send(200, body, {"Content-Type": content_type, "ETag": etag})
                elif path.startswith("/files/"):
                    data = upstream._file(path.removeprefix("/files/"))
                    if data is None:
                        self._send(404, b"not found")
                    else:
                        self._send(200, data, {"Content-Type": "application/octet-stream"})
                else:
                    self._send(404, b"not found")

        return Handler


def proxy_services(tmp_path: Path, upstream: FakeUpstream, **overrides: object) -> Services:
    """Services of an index in ``tmp_path / "data"`` proxying ``upstream`` (in-process)."""
    from index_server.config import Settings
    from index_server.services import build_services
    from tests.conftest import ADMIN_TOKEN

    settings = Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        upstream_urls=(upstream.url,),
        **overrides,
    )
    return build_services(settings)
