"""Helpers for the crash-safety and upstream-fault tests.

* ``FaultyUpstream``: tests/upstream_server.py's ``FakeUpstream`` that can also misbehave on
  the next requests of a path: stall past the timeout, reset the connection mid-answer,
  answer 500, cut the body short of its Content-Length, send a body chunked (no
  Content-Length), send a page that is not JSON, answer a path with a 302 (``redirects``),
  or run a hook (to change the page or the file) while a file is being answered.
* ``KillableServer``: a real ``wheelfarm serve`` in a process group of its own, so a test can
  SIGKILL the gunicorn master and its workers at once and start it again on the same data.
* ``CrashWorker``: the tests' HTTP build worker (tests/warm_helpers.py) that heartbeats in the
  background like the real one and writes where it is (claimed, building, uploading, ...)
  to a progress file, so that a test can kill it at a random moment and know what it was
  doing. ``python -m tests.fault_helpers worker URL TOKEN PLATFORM WORKDIR PROGRESS NAME``
  runs one until it is killed.
* Checks of what a data folder and an index hold: ``scan_blobs``, ``LinkParser``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import requests

from tests.conftest import BIN, free_port, server_env
from tests.upstream_server import FakeUpstream
from tests.warm_helpers import HttpTestWorker

REPO = Path(__file__).resolve().parents[1]

# What FaultyUpstream can do to an answer.
SLOW = "slow"  # wait ``stall`` seconds, then answer normally
RESET = "reset"  # headers and half the body, then a TCP reset
TRUNCATE = "truncate"  # the full Content-Length, part of the body, then a clean close
ERROR_500 = "500"  # HTTP 500
GARBLED = "garbled"  # 200, a JSON Content-Type and a body that is not a page (cut short)
NOT_MODIFIED = "304"  # 304 Not Modified although nothing conditional was asked
GARBLED_HTML = "garbled-html"  # 200, text/html and bytes that are not text at all
NO_MARKUP = "no-markup"  # 200, text/html and a line of text: a proxy's error, not a page
WRONG_TYPE = "wrong-type"  # 200 and a Content-Type no Simple page has
TRICKLE = "trickle"  # the body in ten pieces, ``trickle`` seconds apart (each read is quick)
CHUNKED = "chunked"  # the body with Transfer-Encoding: chunked, so no Content-Length

# 200 answers that are not Simple pages: (body, Content-Type).
NOT_PAGES = {
    GARBLED_HTML: (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe<a href=", "text/html"),
    NO_MARKUP: (b"Upstream under maintenance, try again later.\n", "text/html; charset=utf-8"),
    WRONG_TYPE: (b"<a href='x-1.0.tar.gz'>x-1.0.tar.gz</a>", "application/octet-stream"),
}


class FaultyUpstream(FakeUpstream):
    """A FakeUpstream whose next answers to a path can be made to fail in chosen ways."""

    def __init__(self, mode: str = "json", stall: float = 3.0, trickle: float = 0.3) -> None:
        self.stall = stall
        self.trickle = trickle
        self._faults: dict[str, list[str]] = {}
        # Runs as a file (or .metadata) request comes in, with its name; bytes it returns
        # are the answer's body (None: the file as it is now).
        self.on_file: Callable[[str], bytes | None] | None = None
        # Paths answered with a 302 to this Location (absolute, or relative to the path).
        self.redirects: dict[str, str] = {}
        super().__init__(mode)
        # A client that gave up (the proxy's timeout) makes our late write fail: not news.
        self._server.handle_error = lambda *args: None  # type: ignore[method-assign]

    def fail_next(self, path: str, *faults: str) -> None:
        """The next requests of ``path`` (exact, query ignored) get these faults, in order."""
        with self._lock:
            self._faults.setdefault(path, []).extend(faults)

    def pending(self, path: str) -> list[str]:
        with self._lock:
            return list(self._faults.get(path, []))

    def _take(self, path: str) -> str | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.pop(0) if queue else None

    def replace_file(self, filename: str, data: bytes, metadata: bytes | None = None) -> None:
        """New bytes for a file of the same name (and so a new hash on the next page)."""
        with self._lock:
            for files in self.projects.values():
                for f in files:
                    if f.filename == filename:
                        f.data = data
                        if metadata is not None:
                            f.metadata = metadata

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base: Any = super()._handler()
        upstream = self

        class Handler(base):  # type: ignore[misc,valid-type]
            fault: str | None = None

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                self.fault = upstream._take(path)
                if self.fault is not None:  # the fault is in the body: never a bodiless 304
                    del self.headers["If-None-Match"]
                location = upstream.redirects.get(path)
                if location is not None:
                    with upstream._lock:
                        upstream.requests[path] += 1
                    self._send(302, b"moved", {"Location": location})
                    return
                if path.startswith("/files/") and upstream.on_file is not None:
                    body = upstream.on_file(path.removeprefix("/files/"))
                    if body is not None:
                        with upstream._lock:
                            upstream.requests[path] += 1
                        self._send(200, body, {"Content-Type": "application/octet-stream"})
                        return
                super().do_GET()

            def _send(
                self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> None:
                fault = self.fault
                if fault == SLOW:
                    time.sleep(upstream.stall)
                if fault in (None, SLOW) or status not in (200, 304):
                    super()._send(status, body, headers)
                elif fault == ERROR_500:
                    self.close_connection = True
                    super()._send(500, b"internal server error", {"Connection": "close"})
                elif fault == NOT_MODIFIED:
                    super()._send(304, headers={"ETag": '"unasked"'})
                elif fault == GARBLED:  # said to be JSON (any text is some HTML page)
                    super()._send(
                        200,
                        b'{"meta": {"api-version": "1.1"}, "files": [{"fil',
                        {"Content-Type": "application/vnd.pypi.simple.v1+json"},
                    )
                elif fault in NOT_PAGES:
                    body, content_type = NOT_PAGES[fault]
                    super()._send(200, body, {"Content-Type": content_type})
                elif fault == CHUNKED:
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    step = max(1, -(-len(body) // 4))
                    for start in range(0, len(body), step):
                        piece = body[start : start + step]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                elif fault == TRICKLE:
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    step = max(1, -(-len(body) // 10))
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start : start + step])
                        self.wfile.flush()
                        time.sleep(upstream.trickle)
                else:  # RESET or TRUNCATE: promise the whole body, send a part, hang up
                    self.close_connection = True
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: max(1, len(body) // 2)])
                    self.wfile.flush()
                    if fault == RESET:  # SO_LINGER 0: close() sends a RST, not a FIN
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        self.connection.close()
                    else:
                        self.connection.shutdown(socket.SHUT_WR)

        return Handler


# --- a server that can be killed, process group and all -------------------------------------


@dataclass
class KillableServer:
    data_dir: Path
    log_path: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    start_seconds: float = 0.0  # spent in start(), in all
    kill_seconds: float = 0.0  # spent in kill(), until the last process of the group is gone

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        began = time.monotonic()
        try:
            self._start(timeout)
        except RuntimeError:  # e.g. another test took the port meanwhile: once more
            self.port = free_port()
            self._start(timeout)
        finally:
            self.start_seconds += time.monotonic() - began

    def _start(self, timeout: float) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(BIN / "wheelfarm"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg reaches every worker
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the gunicorn master and its workers, all at once."""
        if self.process is None:
            return
        began = time.monotonic()
        group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.process.wait()
        self.process = None
        try:
            while time.monotonic() < began + 10:  # the workers are dead too
                if not _living_in_group(group):
                    return
                time.sleep(0.01)
            raise RuntimeError(f"processes of group {group} outlived SIGKILL")
        finally:
            self.kill_seconds += time.monotonic() - began

    def stop(self) -> None:
        """A clean stop (SIGTERM to the master), or a kill if it does not go."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
            self.process = None
        except subprocess.TimeoutExpired:
            self.kill()


def _living_in_group(group: int) -> list[int]:
    """Processes of the group that are not dead (zombies wait for init to reap them)."""
    living = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            living.append(int(entry.name))
    return living


def killable_server(data_dir: Path, log_path: Path, **env_extra: str) -> KillableServer:
    return KillableServer(data_dir, log_path, free_port(), server_env(data_dir, **env_extra))


# --- what an index and a data folder hold ---------------------------------------------------


class LinkParser(HTMLParser):
    """The anchors of a PEP 503 page: (href, attributes, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, dict[str, str | None], str]] = []
        self._text: list[str] | None = None
        self._attrs: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._attrs, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._text is not None:
            href = self._attrs.get("href") or ""
            self.links.append((href, self._attrs, "".join(self._text).strip()))
            self._text = None


def page_links(html: str) -> list[tuple[str, dict[str, str | None], str]]:
    parser = LinkParser()
    parser.feed(html)
    parser.close()
    return parser.links


@dataclass
class BlobScan:
    blobs: dict[str, int] = field(default_factory=dict)  # sha256 -> size, verified
    temp_files: list[Path] = field(default_factory=list)  # .tmp-* files of interrupted puts
    bad: list[str] = field(default_factory=list)  # anything else: misnamed, wrong content


def scan_blobs(root: Path) -> BlobScan:
    """Every file under a LocalStorage root: blobs must hold the bytes their key names."""
    scan = BlobScan()
    if not root.exists():
        return scan
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        if path.name.startswith(".tmp-"):
            scan.temp_files.append(path)
            continue
        name = path.name
        expected = f"sha256/{name[:2]}/{name[2:4]}/{name}"
        if relative != expected or len(name) != 64:
            scan.bad.append(f"unexpected file {relative}")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != name:
            scan.bad.append(f"blob {name} holds other bytes ({len(data)} bytes)")
            continue
        scan.blobs[name] = len(data)
    return scan


# --- a build worker that says what it is doing, to be killed ------------------------------


class CrashWorker(HttpTestWorker):
    """HttpTestWorker with a background heartbeat and a progress file.

    Each step is written (unbuffered, one line) to ``progress`` before it is taken, and its
    end after: ``claim``, ``claimed <job> <attempt>``, ``build <job>``, ``upload <job>``,
    ``uploaded <job>``, ``finish <job>``, ``finished <job>``, ``idle``.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        platforms: list[str],
        workdir: Path,
        progress: Path,
        name: str,
    ) -> None:
        super().__init__(server_url, token, platforms, workdir)
        self.name = name
        self.progress_fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.lease_lost: list[int] = []
        self._beat: threading.Event | None = None

    def note(self, line: str) -> None:
        os.write(self.progress_fd, (line + "\n").encode())

    def _heartbeat(self, job_id: int, lease: str, stop: threading.Event) -> None:
        beats = requests.Session()
        beats.headers.update(self.session.headers)
        while not stop.wait(0.25):
            try:
                response = beats.post(
                    f"{self.server}/api/worker/jobs/{job_id}/heartbeat",
                    json={"lease": lease},
                    timeout=10,
                )
            except requests.RequestException:
                continue
            if response.status_code == 409:
                return

    def _post(self, path: str, **kwargs: Any) -> requests.Response:
        job_id = path.split("/")[4] if path.startswith("/api/worker/jobs/") else ""
        step = path.rsplit("/", 1)[-1]
        if step == "claim":
            kwargs["json"] = {**kwargs["json"], "worker": self.name}
            self.note("claim")
        elif step == "wheels":
            self.note(f"upload {job_id}")
        elif step == "finish":
            self.note(f"finish {job_id}")
        try:
            response = super()._post(path, **kwargs)
        except AssertionError as exc:
            if " 409 " in str(exc) and self._beat is not None:
                self._beat.set()
            raise
        if step == "claim":
            if response.status_code == 204:
                self.note("idle")
            else:
                job = response.json()
                self.note(f"claimed {job['id']} {job['attempt']}")
                self._beat = threading.Event()
                threading.Thread(
                    target=self._heartbeat,
                    args=(job["id"], job["lease"], self._beat),
                    daemon=True,
                ).start()
        elif step == "wheels":
            self.note(f"uploaded {job_id}")
        elif step == "finish":
            self.note(f"finished {job_id}")
            if self._beat is not None:
                self._beat.set()
        return response

    def _build(self, job: dict[str, Any]) -> Path:
        self.note(f"build {job['id']}")
        return super()._build(job)

    def run_until(self, stop: Callable[[], bool], poll: float = 0.05) -> None:
        """Work until ``stop()``; a lost lease (409) only ends that job, as in a real worker."""
        while not stop():
            try:
                if not self.work_once():
                    time.sleep(poll)
            except AssertionError as exc:
                if " 409 " not in str(exc):
                    raise
                self.lease_lost.append(1)
                if self._beat is not None:
                    self._beat.set()


class WorkerZygote:
    """Forks CrashWorker processes from one process that has imported everything already.

    A fresh interpreter takes most of a second of CPU to import the worker; a fork takes
    milliseconds, so a test can start (and kill) many workers. Each worker is a process of
    its own, killed by pid; it stops by itself if the zygote goes away.
    """

    def __init__(self, server_url: str, token: str, platform: str, workdir: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fault_helpers",
                "zygote",
                server_url,
                token,
                platform,
                str(workdir),
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pids: list[int] = []

    def spawn(self, name: str, progress: Path) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{name} {progress}\n")
        self.process.stdin.flush()
        pid = int(self.process.stdout.readline())
        self.pids.append(pid)
        return pid

    def close(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.kill()
        self.process.wait()


def _zygote_main(args: list[str]) -> None:
    server_url, token, platform, workdir = args
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    zygote = os.getpid()
    for line in sys.stdin:
        name, progress = line.split()
        pid = os.fork()
        if pid:
            print(pid, flush=True)
            continue
        try:
            worker = CrashWorker(server_url, token, [platform], Path(workdir), Path(progress), name)
            worker.note("ready")
            worker.run_until(lambda: os.getppid() != zygote)
        except BaseException as exc:  # the test reads it from the progress file
            with open(progress, "a") as fh:
                fh.write(f"error {exc!r}\n".replace("\n", " ").rstrip() + "\n")
            os._exit(1)
        os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["zygote"]:
        _zygote_main(sys.argv[2:])
