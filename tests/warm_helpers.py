"""Helpers for the ``wheelfarm request`` / ``wheelfarm warm`` tests.

* ``make_test_sdist``: an sdist (tests/factory.py) whose pyproject.toml uses a tiny in-tree
  PEP 517 backend with no build requirements, so that pip can prepare its metadata from a
  test index that has no setuptools (no network in tests).
* ``HttpTestWorker``: a worker for tests only: stand-in builds, real resolutions on this
  machine's pip (see its docstring).
* ``Farm``: a real server (tests/conftest.py ``start_server``) with upload/build tokens,
  twine uploads and calls of the real ``wheelfarm`` command.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
from packaging.utils import canonicalize_name, parse_sdist_filename

from builder import protocol
from builder.runners import HostRunner
from builder.worker import ServerClient, Worker
from platforms import Platform, load_platforms
from tests.conftest import ADMIN_TOKEN, BIN, LiveServer, clean_client_env, start_server, stop_server
from tests.factory import make_sdist, make_wheel

PEP691 = "application/vnd.pypi.simple.v1+json"

# A PEP 517 backend that needs nothing installed: metadata is the sdist's PKG-INFO.
_BACKEND = '''\
"""In-tree build backend of wheelfarm's test sdists: metadata only."""
import os


def _pkg_info():
    with open("PKG-INFO", encoding="utf-8") as fh:
        return fh.read()


def _dist_info():
    fields = dict(line.split(": ", 1) for line in _pkg_info().splitlines() if ": " in line)
    name = fields["Name"].replace("-", "_").replace(".", "_")
    return f"{name}-{fields['Version']}.dist-info"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    dist_info = _dist_info()
    os.makedirs(os.path.join(metadata_directory, dist_info))
    with open(os.path.join(metadata_directory, dist_info, "METADATA"), "w") as fh:
        fh.write(_pkg_info())
    return dist_info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("test sdists are built by the test worker only")


def build_sdist(sdist_directory, config_settings=None):
    raise RuntimeError("test sdists are made by tests/factory.py")
'''


def make_test_sdist(
    directory: Path,
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
) -> Path:
    """An sdist with static [project] metadata and the in-tree metadata-only backend."""
    requires = list(requires)
    deps = ", ".join(json.dumps(r) for r in requires)
    rp = f"requires-python = {json.dumps(requires_python)}\n" if requires_python else ""
    pyproject = (
        "[build-system]\n"
        "requires = []\n"
        'build-backend = "wf_test_backend"\n'
        'backend-path = ["."]\n\n'
        "[project]\n"
        f'name = "{name}"\n'
        f'version = "{version}"\n'
        f"dependencies = [{deps}]\n"
        f"{rp}"
    )
    return make_sdist(
        directory,
        name,
        version,
        requires=requires,
        requires_python=requires_python,
        files={"pyproject.toml": pyproject, "wf_test_backend.py": _BACKEND},
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class VenvRunner(HostRunner):
    """The host runner with this test process's venv (which has pip) as the build tools,
    so that no tools venv is installed from an index (tests have no network)."""

    def tools_venv(self) -> Path:
        return Path(sys.prefix)


class HttpTestWorker:
    """A worker for TESTS ONLY: no container, no compiler.

    It speaks the real worker protocol over HTTP (claim, heartbeat, log, wheels, finish; see
    builder/protocol.py and tests/test_jobs.py) with a build-scope token, taking the job
    ``kinds`` given.

    A build job is "built" by reading PKG-INFO from the job's sdist on the index and making a
    wheel of it with tests/factory.py (``make_wheel``, tagged for the platform). Projects
    named in ``failing`` are finished as failed builds, with error_category
    ``compiler_error``, a log and that error summary.

    A resolution job is run for real, by the worker's own code (builder.worker.Worker's
    ``_resolve``: builder/resolve.py's pip command, log streaming, failure categories) with
    the host runner, whose tools are this venv: pip on this machine, which is the platform
    (debian-12-py3.11-x86_64; the host runner refuses any other), against the platform's
    index. Only the container around it is missing; tests/test_resolution_farm.py has it.
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        platforms: Iterable[str],
        workdir: Path,
        failing: Mapping[str, str] | None = None,
        kinds: Iterable[str] = protocol.JOB_KINDS,
    ) -> None:
        self.server = server_url.rstrip("/")
        self.token = token
        self.platforms = list(platforms)
        self.workdir = workdir
        self.failing = {canonicalize_name(k): v for k, v in (failing or {}).items()}
        self.kinds = list(kinds)
        self.known: dict[str, Platform] = load_platforms()
        self.session = requests.Session()
        self.session.headers.update(_auth(token))
        self.handled: list[tuple[str, str, str, str]] = []  # project, version, platform, outcome
        self.resolved: list[tuple[int, str, str]] = []  # job id, platform, outcome
        self.errors: list[BaseException] = []
        self._resolver: Worker | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="http-test-worker", daemon=True)

    def __enter__(self) -> HttpTestWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.errors:
            raise AssertionError(f"the test worker failed: {self.errors[0]!r}") from self.errors[0]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.work_once():
                    self._stop.wait(0.05)  # the queue is empty: poll again shortly
            except BaseException as exc:  # reported by __exit__
                self.errors.append(exc)
                return

    def _post(self, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.post(self.server + path, timeout=30, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"POST {path}: {response.status_code} {response.text}")
        return response

    def work_once(self) -> bool:
        """Claim and finish one job; False if there was none."""
        response = self._post(
            "/api/worker/claim",
            json={
                "worker": "http-test-worker",
                "platforms": self.platforms,
                "runner": "host",
                "kinds": self.kinds,
            },
        )
        if response.status_code == 204:
            return False
        job = protocol.validate(response.json(), protocol.JOB)
        if job.get("kind") == "resolve":
            self._resolve(job)
            return True
        jid, lease = job["id"], job["lease"]
        self._post(f"/api/worker/jobs/{jid}/heartbeat", json={"lease": lease})

        def log(text: str) -> None:
            self._post(f"/api/worker/jobs/{jid}/log", json={"lease": lease, "text": text})

        log(f"test worker: building {job['project']} {job['version']} for {job['platform']}\n")
        if job["project"] in self.failing:
            log(
                "gcc -pthread -fPIC -I/usr/include/python3 -c src/_speedups.c\n"
                "src/_speedups.c:3:10: fatal error: missing.h: No such file or directory\n"
                "compilation terminated.\n"
                "error: command '/usr/bin/gcc' failed with exit code 1\n"
            )
            report = {
                "lease": lease,
                "outcome": "failed",
                "error_category": "compiler_error",
                "error_summary": self.failing[job["project"]],
                "build_seconds": 0.1,
            }
            self._post(f"/api/worker/jobs/{jid}/finish", json=report)
            self.handled.append((job["project"], job["version"], job["platform"], "failed"))
            return True
        wheel = self._build(job)
        with wheel.open("rb") as fh:
            self._post(
                f"/api/worker/jobs/{jid}/wheels",
                data={"lease": lease, "sha256_digest": sha256_of(wheel)},
                files={"content": (wheel.name, fh)},
            )
        log(f"built {wheel.name}\n")
        self._post(
            f"/api/worker/jobs/{jid}/finish",
            json={
                "lease": lease,
                "outcome": "succeeded",
                "wheels": [wheel.name],
                "build_seconds": 0.1,
            },
        )
        self.handled.append((job["project"], job["version"], job["platform"], "succeeded"))
        return True

    def _resolve(self, job: dict[str, Any]) -> None:
        """As ``wheelfarm worker --runner host`` resolves (builder/worker.py), on this venv."""
        if self._resolver is None:
            scratch = self.workdir / "resolver"
            self._resolver = Worker(
                ServerClient(self.server, self.token),
                {name: self.known[name] for name in self.platforms},
                runner="host",
                name="http-test-worker",
                work_dir=scratch,
            )
            for name in self.platforms:
                self._resolver._host_runners[name] = VenvRunner(
                    self.known[name], tools_index_url="", work_dir=scratch
                )
        report = self._resolver._resolve(job)
        final = self._resolver.client.finish(job, report)
        self.resolved.append((job["id"], job["platform"], final["state"]))

    def _build(self, job: dict[str, Any]) -> Path:
        page_url = f"{self.server}{job['index_path']}{job['project']}/"
        page = self.session.get(page_url, headers={"Accept": PEP691}, timeout=30)
        page.raise_for_status()
        sdists = [
            f
            for f in page.json()["files"]
            if not f["filename"].endswith(".whl")
            and str(parse_sdist_filename(f["filename"])[1]) == job["version"]
        ]
        assert sdists, f"no sdist of {job['project']} {job['version']} on {page_url}"
        content = self.session.get(urljoin(page_url, sdists[0]["url"]), timeout=30)
        content.raise_for_status()
        with tarfile.open(fileobj=io.BytesIO(content.content)) as archive:
            member = next(
                m
                for m in archive.getmembers()
                if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
            )
            pkg_info = archive.extractfile(member).read().decode()  # type: ignore[union-attr]
        platform = self.known[job["platform"]]
        tag = f"{platform.interpreter}-{platform.interpreter}-{platform.platform_tags()[0]}"
        out = self.workdir / f"job-{job['id']}"
        out.mkdir(parents=True, exist_ok=True)
        return make_wheel(out, job["project"], job["version"], tag=tag, metadata=pkg_info)


@dataclass
class Farm:
    """A real wheelfarm server for a test module, and ways to talk to it."""

    server: LiveServer
    upload_token: str
    build_token: str
    workdir: Path

    @property
    def url(self) -> str:
        return self.server.url

    def upload(self, platform: str, files: Iterable[Path]) -> None:
        """Upload with twine (the real client) to the platform's legacy upload URL."""
        result = subprocess.run(
            [
                str(BIN / "twine"),
                "upload",
                "--non-interactive",
                "--disable-progress-bar",
                "--repository-url",
                f"{self.url}/{platform}/legacy/",
                "-u",
                "__token__",
                "-p",
                self.upload_token,
                *map(str, files),
            ],
            env=clean_client_env(NO_COLOR="1"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def api(self, method: str, path: str, body: object | None = None) -> Any:
        response = requests.request(
            method, self.url + path, json=body, headers=_auth(ADMIN_TOKEN), timeout=30
        )
        assert response.status_code < 400, f"{method} {path}: {response.text}"
        return response.json()

    def jobs(self, platform: str, project: str | None = None) -> list[dict[str, Any]]:
        query = f"/api/builds?platform={platform}" + (f"&project={project}" if project else "")
        return self.api("GET", query)["builds"]  # type: ignore[no-any-return]

    def wheelfarm(
        self, *args: str, env: Mapping[str, str] | None = None, with_server: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``wheelfarm`` command as a CI job would."""
        options = ["--server", self.url, "--token", self.upload_token] if with_server else []
        command = [str(BIN / "wheelfarm"), *args, *options]
        return subprocess.run(
            command,
            env=clean_client_env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.workdir,
        )

    def warm_while_working(
        self,
        *args: str,
        platforms: Iterable[str],
        failing: Mapping[str, str] | None = None,
        tty: bool = False,
    ) -> tuple[subprocess.CompletedProcess[str], HttpTestWorker]:
        """Run ``wheelfarm warm ... --wait``; start a test build worker once it waits for
        builds (resolutions are another worker's: ``resolver``).

        (Started earlier, the worker would build the jobs the resolution queues while warm
        still polls it, and warm would find wheels everywhere.) With ``tty``, warm's stdout
        is a pseudo-terminal, as in an interactive shell.
        """
        command = [
            str(BIN / "wheelfarm"),
            "warm",
            *args,
            "--wait",
            "--poll-interval",
            "0.2",
            "--server",
            self.url,
            "--token",
            self.upload_token,
        ]
        reader, writer = pty.openpty() if tty else os.pipe()
        process = subprocess.Popen(
            command,
            env=clean_client_env(COLUMNS="120"),
            stdout=writer,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
        )
        os.close(writer)
        output = b""
        # The first progress line or bar of the builds: they are queued and warm waits.
        while not re.search(rb"^\[[ \d.]+s\] (job |queued )|building ", output, re.MULTILINE):
            chunk = _read(reader)
            if not chunk:
                break
            output += chunk
        with self.worker(platforms, failing, kinds=("build",)) as worker:
            while chunk := _read(reader):
                output += chunk
            process.wait(120)
        os.close(reader)
        assert process.stderr is not None
        err = process.stderr.read().decode()
        process.stderr.close()
        return subprocess.CompletedProcess(
            command, process.returncode, output.decode(), err
        ), worker

    def worker(
        self,
        platforms: Iterable[str],
        failing: Mapping[str, str] | None = None,
        kinds: Iterable[str] = protocol.JOB_KINDS,
    ) -> HttpTestWorker:
        return HttpTestWorker(
            self.url, self.build_token, platforms, self.workdir / "worker", failing, kinds
        )

    def resolver(self, platforms: Iterable[str]) -> HttpTestWorker:
        """A test worker taking resolution jobs only (real ones, on this machine's pip)."""
        return self.worker(platforms, kinds=("resolve",))


def _read(fd: int) -> bytes:
    """Read what is there; b"" at the end (a pty's end is an EIO error on Linux)."""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


@contextmanager
def open_farm(directory: Path) -> Iterator[Farm]:
    """Start a server in ``directory`` (for a module-scoped fixture); stop it afterwards."""
    server = start_server(directory / "server-data", directory / "server.log")
    try:
        workdir = directory / "work"
        workdir.mkdir()
        yield Farm(server, server.token("upload"), server.token("build"), workdir)
    finally:
        stop_server(server)
