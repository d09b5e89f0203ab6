"""The static read path for tests: Debian's nginx (non-daemon, on a free loopback port) with
the shipped config (deploy/nginx/), and ``wheelfarm export --follow`` as a subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BIN, LiveServer, free_port

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "deploy" / "nginx"
SHIPPED_FILES = ("wheelfarm-http.conf", "wheelfarm-server.conf", "wheelfarm-proxy.conf")
# One line per request: what nginx did with it ("-" as upstream: served from the export).
LOG_FORMAT = "'$request_method $request_uri $status up=$upstream_addr'"


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if not found:
        pytest.skip("nginx is not installed (.ci/setup.d/55-nginx.sh installs it)")
    return found


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    def served(self) -> list[tuple[str, str, str, str]]:
        """(method, uri, status, upstream) of every request so far ("-": static)."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        rows = []
        for line in lines:
            method, uri, status, upstream = line.split(" ")
            rows.append((method, uri, status, upstream.removeprefix("up=")))
        return rows


def start_nginx(directory: Path, export_root: Path, server_url: str) -> Nginx:
    """nginx on the shipped config files (linked into its own conf folder, as installed)."""
    binary = nginx_binary()
    directory.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        link = directory / name
        if not link.exists():
            link.symlink_to(SHIPPED / name)
    port = free_port()
    server = server_url.removeprefix("http://")
    user = "user root;" if os.geteuid() == 0 else ""  # the test folders are root's only
    temps = "\n".join(
        f"    {kind}_temp_path {directory / ('tmp-' + kind)};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (directory / "nginx.conf").write_text(
        f"""
{user}
daemon off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    log_format wheelfarm_test {LOG_FORMAT};
    access_log {directory / "access.log"} wheelfarm_test;
{temps}
    default_type application/octet-stream;
    sendfile on;
    include wheelfarm-http.conf;
    upstream wheelfarm_server {{
        server {server};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {export_root};
        include wheelfarm-server.conf;
    }}
}}
"""
    )
    check = subprocess.run(
        [binary, "-t", "-p", str(directory), "-c", str(directory / "nginx.conf"),
         "-e", str(directory / "error.log")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"),
         "-e", str(directory / "error.log")],
        stdout=subprocess.DEVNULL, stderr=(directory / "stderr.log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "nginx did not start: " + (directory / "error.log").read_text()
                ) from None
            time.sleep(0.05)
    return Nginx(url, process, directory)


def stop_nginx(nginx: Nginx) -> None:
    nginx.process.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
    try:
        nginx.process.wait(10)
    except subprocess.TimeoutExpired:
        nginx.process.kill()
        nginx.process.wait()


def start_exporter(
    server: LiveServer, export_root: Path, log_path: Path, *, follow: bool = True
) -> subprocess.Popen[bytes]:
    args = ["export", "--target", str(export_root)] + (["--follow"] if follow else [])
    return subprocess.Popen(
        [str(BIN / "wheelfarm"), *args],
        env=server.env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_for_export(log_path: Path, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Until the follower logged its first full export."""
    deadline = time.monotonic() + seconds
    while "export done" not in (log_path.read_text() if log_path.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"exporter: {log_path.read_text()}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
