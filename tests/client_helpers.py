"""Helpers for the real-client tests: fresh venvs, pip/uv/twine runs, a request-counting proxy.

Every client runs in ``clean_client_env()`` so this machine's pip configuration never leaks in.
pip is the one in the test venv (it must be >= 25.3 for metadata-only dry runs), driven into
fresh target venvs with its ``--python`` option; the target venvs are made ``--without-pip``.
"""

from __future__ import annotations

import base64
import http.client
import importlib.metadata
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from packaging.version import Version

from tests.conftest import ADMIN_TOKEN, BIN, clean_client_env

MIN_PIP = Version("25.3")


def pip_version() -> Version:
    return Version(importlib.metadata.version("pip"))


def run(
    cmd: Iterable[str | Path],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a client; on an unexpected exit status, fail with its whole output."""
    argv = [str(c) for c in cmd]
    result = subprocess.run(
        argv,
        env=env if env is not None else clean_client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


def pip(
    *args: str | Path, python: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The test venv's pip; with ``python``, acting on that interpreter's environment."""
    target = ["--python", str(python)] if python else []
    return run(
        # No cache: immutable files would otherwise be served from it without a request.
        [sys.executable, "-m", "pip", *target, *args, "--no-cache-dir", "--retries", "0"],
        check=check,
    )


def uv(*args: str | Path, cache_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """uv (ignores PIP_*; gets its index from the command line) with a private cache."""
    return run(
        [BIN / "uv", *args],
        env=clean_client_env(UV_CACHE_DIR=str(cache_dir), NO_COLOR="1"),
        check=check,
    )


def twine_upload(
    server_url: str, platform: str, token: str, files: Iterable[Path], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``twine upload`` to a platform's legacy upload URL with an API token."""
    return run(
        [
            BIN / "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            f"{server_url}/{platform}/legacy/",
            "-u",
            "__token__",
            "-p",
            token,
            *files,
        ],
        env=clean_client_env(NO_COLOR="1"),
        check=check,
    )


def flat_output(result: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr with all whitespace runs made one space (twine wraps its messages)."""
    return " ".join((result.stdout + result.stderr).split())


def api(
    server_url: str,
    method: str,
    path: str,
    body: object | None = None,
    *,
    basic_auth: bool = False,
) -> object:
    """Call the JSON admin API with the admin token (as Bearer, or as basic-auth password)."""
    if basic_auth:
        credentials = base64.b64encode(f"__token__:{ADMIN_TOKEN}".encode()).decode()
        authorization = f"Basic {credentials}"
    else:
        authorization = f"Bearer {ADMIN_TOKEN}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server_url + path,
        data=data,
        method=method,
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def file_id(server_url: str, project: str, filename: str) -> int:
    listing = api(server_url, "GET", f"/api/projects/{project}")
    assert isinstance(listing, dict)
    ids = [f["id"] for f in listing["files"] if f["filename"] == filename]
    assert len(ids) == 1, f"{filename} not (uniquely) in {listing}"
    return int(ids[0])


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def raw_get(url: str, headers: dict[str, str] | None = None) -> RawResponse:
    """One GET, like curl: redirects are not followed."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {}
        )
        response = conn.getresponse()
        return RawResponse(response.status, response.headers, response.read())
    finally:
        conn.close()


# Hop-by-hop headers are the proxy's own business, never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    accept: str
    status: int
    content_type: str


@dataclass
class CountingProxy:
    """A reverse proxy on loopback that records every request before answering it.

    A request is recorded before the client gets its response, so once a client process has
    exited, everything it asked for is in ``requests`` (no log-flush race).
    """

    upstream: str
    requests: list[SeenRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        up = urlsplit(self.upstream)
        self._up_host, self._up_port = up.hostname or "127.0.0.1", up.port or 80
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def paths(self, method: str = "GET") -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if r.method == method]

    def _record(self, seen: SeenRequest) -> None:
        with self._lock:
            self.requests.append(seen)

    def _forward(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=60)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            return response.status, response.getheaders(), body
        finally:
            conn.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: simple and exact

            def _proxy(self) -> None:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "host"
                }
                status, resp_headers, body = proxy._forward(self.command, self.path, headers)
                content_type = next((v for k, v in resp_headers if k.lower() == "content-type"), "")
                proxy._record(
                    SeenRequest(
                        self.command,
                        self.path,
                        self.headers.get("Accept", ""),
                        status,
                        content_type,
                    )
                )
                self.send_response(status)
                for name, value in resp_headers:
                    if name.lower() not in _HOP_BY_HOP | {"content-length", "server", "date"}:
                        self.send_header(name, value)
                length = next((v for k, v in resp_headers if k.lower() == "content-length"), None)
                if self.command == "HEAD":
                    if length is not None:
                        self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = _proxy
            do_HEAD = _proxy

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@dataclass
class Venv:
    path: Path
    python: Path

    def check_import(self, code: str) -> str:
        """Run ``code`` in the venv's interpreter; returns its stdout."""
        return run([self.python, "-c", code]).stdout


def fresh_venv(path: Path) -> Venv:
    """A fresh venv without pip (fast to make): pip reaches it through ``--python``."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    return Venv(path, path / "bin" / "python")
