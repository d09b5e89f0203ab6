"""A build worker: claims jobs from the server over HTTP, builds them, reports back.

It needs nothing but the server's URL and a ``build``-scoped token (see builder.protocol).
The token stays in the worker: builds get the platform's index URL and nothing else.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder import protocol
from builder.build import BuildResult, BuildSettings, build_wheel
from builder.fetch import HashMismatch, fetch_with_hash
from builder.resolve import ResolveResult, resolve_requirements
from builder.runners import ContainerRunner, HostRunner, Runner
from platforms import Platform

log = logging.getLogger("wheelfarm.worker")

SDIST_SUFFIXES = (".tar.gz", ".zip")
PAGE_ACCEPT = "application/vnd.pypi.simple.v1+json"


class LeaseLost(Exception):
    """The server no longer counts this worker as the job's builder."""


class ServerError(Exception):
    pass


class ServerClient:
    """The worker's side of the protocol: one method per message."""

    def __init__(self, server_url: str, token: str, timeout: float = 60) -> None:
        self.server_url = server_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _post(self, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.post(self.server_url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServerError(f"POST {path}: {exc}") from None
        if response.status_code == 409:
            raise LeaseLost(response.text.strip())
        if response.status_code >= 400:
            raise ServerError(f"POST {path}: HTTP {response.status_code}: {response.text.strip()}")
        return response

    def claim(
        self,
        worker: str,
        platforms: list[str],
        runner: str,
        kinds: tuple[str, ...] = protocol.JOB_KINDS,
    ) -> dict[str, Any] | None:
        message = {"worker": worker, "platforms": platforms, "runner": runner}
        if tuple(kinds) != protocol.JOB_KINDS:
            message["kinds"] = list(kinds)
        response = self._post("/api/worker/claim", json=protocol.validate(message, protocol.CLAIM))
        if response.status_code == 204:
            return None
        return protocol.validate(response.json(), protocol.JOB)

    def heartbeat(self, job: dict[str, Any]) -> bool:
        response = self._post(
            f"/api/worker/jobs/{job['id']}/heartbeat", json={"lease": job["lease"]}
        )
        return bool(protocol.validate(response.json(), protocol.HEARTBEAT_REPLY)["cancel"])

    def log(self, job: dict[str, Any], text: str) -> None:
        self._post(f"/api/worker/jobs/{job['id']}/log", json={"lease": job["lease"], "text": text})

    def upload_wheel(self, job: dict[str, Any], wheel: Path) -> None:
        import hashlib

        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        with wheel.open("rb") as fh:
            self._post(
                f"/api/worker/jobs/{job['id']}/wheels",
                data={"lease": job["lease"], "sha256_digest": digest},
                files={"content": (wheel.name, fh, "application/zip")},
            )

    def finish(self, job: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
        message = protocol.validate({"lease": job["lease"], **report}, protocol.FINISH)
        return self._post(f"/api/worker/jobs/{job['id']}/finish", json=message).json()  # type: ignore[no-any-return]

    def index_url(self, job: dict[str, Any]) -> str:
        return self.server_url + job["index_path"]

    def find_sdist(self, job: dict[str, Any]) -> tuple[str, str, str]:
        """(url, sha256, filename) of the job's sdist, as the platform's index lists it."""
        page_url = f"{self.index_url(job)}{job['project']}/"
        response = self.session.get(page_url, headers={"Accept": PAGE_ACCEPT}, timeout=self.timeout)
        if response.status_code != 200:
            raise ServerError(f"GET {page_url}: HTTP {response.status_code}")
        wanted = Version(job["version"])
        found = [
            entry
            for entry in response.json()["files"]
            if entry["filename"].endswith(SDIST_SUFFIXES)
            and "sha256" in entry["hashes"]
            and _sdist_version(entry["filename"], job["project"]) == wanted
        ]
        if not found:
            raise ServerError(f"no sdist of {job['project']} {job['version']} on {page_url}")
        # Several spellings of one sdist (an upstream may list Alpha-1.0 and alpha-1.0):
        # the PEP 625 name first, never whichever sorts first.
        canonical = f"{job['project'].replace('-', '_')}-{job['version']}.tar.gz"
        entry = min(found, key=lambda e: (e["filename"] != canonical, e["filename"]))
        return urljoin(page_url, entry["url"]), entry["hashes"]["sha256"], entry["filename"]


def _sdist_version(filename: str, project: str) -> Version | None:
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename

    try:
        name, version = parse_sdist_filename(filename)
    except (InvalidSdistFilename, InvalidVersion):
        return None
    return version if canonicalize_name(name) == project else None


def build_settings(settings: dict[str, Any]) -> BuildSettings:
    """The server's per-project settings (protocol.BUILD_SETTINGS) as the builder's."""
    return BuildSettings(
        build_constraints=settings.get("constraints", ""),
        env=settings.get("env", {}),
        apt_packages=tuple(settings.get("os_packages", ())),
        build_command=settings.get("build_command") or "",
    )


class LogStream:
    """Sends a build's output to the server as it comes, at most about once a second."""

    def __init__(self, client: ServerClient, job: dict[str, Any], interval: float = 1.0):
        self.client, self.job, self.interval = client, job, interval
        self.buffer: list[str] = []
        self.sent_at = 0.0
        self.lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self.lock:
            self.buffer.append(text)
            if time.monotonic() - self.sent_at >= self.interval:
                self._send()

    def flush(self) -> None:
        with self.lock:
            self._send()

    def _send(self) -> None:
        text, self.buffer = "".join(self.buffer), []
        self.sent_at = time.monotonic()
        while text:  # the protocol caps one message; a long burst goes in pieces
            piece, text = text[:500_000], text[500_000:]
            try:
                self.client.log(self.job, piece)
            except ServerError as exc:  # the log is best effort; the result is not
                log.warning("log upload failed: %s", exc)
                return


@dataclass
class Heartbeat:
    """Renews the job's lease in the background; notes a lost lease or a cancel."""

    client: ServerClient
    job: dict[str, Any]
    stop: threading.Event = field(default_factory=threading.Event)
    lost: bool = False
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = max(self.job["lease_seconds"] / 3, 0.2)
        while not self.stop.wait(interval):
            try:
                if self.client.heartbeat(self.job):
                    self.cancelled = True
            except LeaseLost:
                self.lost = True
                return
            except ServerError as exc:  # a blip: the lease outlives a missed beat or two
                log.warning("heartbeat failed: %s", exc)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@dataclass
class Worker:
    client: ServerClient
    platforms: dict[str, Platform]
    runner: str = "podman"  # podman | docker | host
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{threading.get_ident()}")
    work_dir: Path | None = None
    poll_seconds: float = 5.0
    ca_bundle: Path | None = None
    tools_index_url: str = "https://pypi.org/simple/"
    tools_env: dict[str, str] = field(default_factory=dict)  # e.g. PIP_CERT, host runner only
    cgroup_parent: str | None = None  # container runners: where the build containers go
    kinds: tuple[str, ...] = protocol.JOB_KINDS  # the kinds of job taken: build, resolve
    _host_runners: dict[str, Runner] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.work_dir is not None:  # a fresh --work-dir is made, not a crash per job
            self.work_dir.mkdir(parents=True, exist_ok=True)

    def run(self, stop: threading.Event, max_jobs: int | None = None) -> int:
        """Claim and build jobs until ``stop`` is set (or ``max_jobs`` are done)."""
        done = 0
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            try:
                worked = self.run_one()
            except ServerError as exc:
                log.warning("server unavailable: %s", exc)
                worked = False
            if worked:
                done += 1
            else:
                stop.wait(self.poll_seconds)
        return done

    def run_one(self) -> bool:
        job = self.client.claim(self.name, sorted(self.platforms), self.runner, self.kinds)
        if job is None:
            return False
        resolving = job.get("kind") == "resolve"
        log.info(
            "claimed job %s: %s for %s",
            job["id"],
            "a resolution" if resolving else f"{job['project']} {job['version']}",
            job["platform"],
        )
        try:
            with Heartbeat(self.client, job) as beat:
                try:
                    report = self._resolve(job) if resolving else self._build(job)
                except (LeaseLost, ServerError):
                    raise
                except Exception as exc:  # a bug or a broken runner: the job fails, we go on
                    log.exception("job %s crashed", job["id"])
                    self.client.log(job, f"[worker] internal error: {exc!r}\n")
                    report = {
                        "outcome": "failed",
                        "error_category": "other",
                        "error_summary": f"worker error: {exc!r}"[:1000],
                    }
            if beat.lost or beat.cancelled:
                log.warning(
                    "job %s: %s; result dropped",
                    job["id"],
                    "cancelled" if beat.cancelled else "lease lost",
                )
                return True
            final = self.client.finish(job, report)
            log.info("job %s: %s", job["id"], final["state"])
        except LeaseLost as exc:
            log.warning("job %s: lease lost: %s", job["id"], exc)
        except ServerError as exc:
            log.warning("job %s: server unavailable, the lease will expire: %s", job["id"], exc)
        return True

    def _build(self, job: dict[str, Any]) -> dict[str, Any]:
        platform = self.platforms[job["platform"]]
        scratch = Path(tempfile.mkdtemp(prefix=f"job-{job['id']}-", dir=self.work_dir))
        started = time.monotonic()
        self.client.log(
            job, f"[worker {self.name}] attempt {job['attempt']}, runner {self.runner}\n"
        )
        try:
            url, sha256, filename = self.client.find_sdist(job)
            sdist = fetch_with_hash(
                url,
                scratch / "in" / filename,
                sha256,
                headers={"Authorization": self.client.session.headers["Authorization"]},
            )
        except (ServerError, HashMismatch, OSError, ValueError) as exc:
            self.client.log(job, f"[worker] cannot fetch the sdist: {exc}\n")
            return {
                "outcome": "failed",
                "error_category": "network",
                "error_summary": f"cannot fetch the sdist: {exc}"[:1000],
            }
        sdist.chmod(0o644)  # the build runs as another (non-root) user
        self.client.log(job, f"[worker] fetched {filename} (sha256 {sha256}), building\n")
        stream = LogStream(self.client, job)
        result = self._run_build(
            platform,
            sdist,
            self.client.index_url(job),
            scratch / "out",
            build_settings(job["settings"]),
            stream,
        )
        stream.flush()
        report: dict[str, Any] = {
            "image_id": result.image_id or result.image,
            "platform_image_id": self._platform_image_id(platform, result),
            "build_seconds": round(time.monotonic() - started, 3),
            "os_packages": result.os_packages,
            "os_packages_closure": result.os_packages_closure,
            "shared_libraries": sorted(result.shared_libraries),
            "compiled": result.compiled,
        }
        if not result.ok:
            return {
                **report,
                "outcome": "failed",
                "error_category": result.category.value if result.category else "other",
                "error_summary": result.summary[:10_000],
            }
        for wheel in result.wheels:
            self.client.upload_wheel(job, wheel)
        return {**report, "outcome": "succeeded", "wheels": [w.name for w in result.wheels]}

    def _resolve(self, job: dict[str, Any]) -> dict[str, Any]:
        """A resolution job: pip's resolver in the platform's build container."""
        platform = self.platforms[job["platform"]]
        self.client.log(
            job, f"[worker {self.name}] attempt {job['attempt']}, runner {self.runner}, resolving\n"
        )
        settings = build_settings({**job["settings"], "env": {}})
        if settings.build_constraints:
            self.client.log(
                job,
                "[worker] build constraints (PIP_BUILD_CONSTRAINT):\n"
                + settings.build_constraints
                + ("" if settings.build_constraints.endswith("\n") else "\n"),
            )
        stream = LogStream(self.client, job)
        result = self._run_resolve(platform, job, settings, stream)
        stream.flush()
        report: dict[str, Any] = {
            "image_id": result.image_id or result.image or None,
            "build_seconds": round(result.seconds, 3),
        }
        if not result.ok:
            self.client.log(job, f"[worker] {result.category}: {result.summary}\n")
            return {
                **report,
                "outcome": "failed",
                "error_category": result.category or "other",
                "error_summary": result.summary[:10_000],
            }
        self.client.log(job, f"[worker] {result.summary}\n")
        return {**report, "outcome": "succeeded", "closure": result.closure}

    def _run_resolve(
        self,
        platform: Platform,
        job: dict[str, Any],
        settings: BuildSettings,
        on_output: LogStream,
    ) -> ResolveResult:
        common: dict[str, Any] = {
            "settings": settings,
            "timeout": float(job.get("timeout") or 600),
            "ca_bundle": self.ca_bundle,
            "on_output": on_output,
        }
        inputs = (job.get("requirements", ""), job.get("constraints", ""))
        if self.runner == "host":
            runner = self._host_runners.get(platform.name)
            if runner is None:
                runner = HostRunner(platform, self.tools_index_url, tools_env=self.tools_env)
                self._host_runners[platform.name] = runner
            return resolve_requirements(
                platform,
                *inputs,
                self.client.index_url(job),
                runner=runner,
                image="host",
                **common,
            )
        return resolve_requirements(
            platform,
            *inputs,
            self.client.index_url(job),
            engine=self.runner,
            runner=ContainerRunner(self.runner, cgroup_parent=self.cgroup_parent),
            **common,
        )

    def _platform_image_id(self, platform: Platform, result: BuildResult) -> str | None:
        """The id of the platform's build image this build came from (its base, for a
        derived image with extra packages); None for the host runner."""
        if self.runner == "host":
            return None
        from builder.images import image_id, image_name

        return image_id(image_name(platform), self.runner) or result.image_id or None

    def _run_build(
        self,
        platform: Platform,
        sdist: Path,
        index_url: str,
        out: Path,
        settings: BuildSettings,
        on_output: LogStream,
    ) -> BuildResult:
        if self.runner == "host":
            runner = self._host_runners.get(platform.name)
            if runner is None:
                runner = HostRunner(platform, self.tools_index_url, tools_env=self.tools_env)
                self._host_runners[platform.name] = runner
            return build_wheel(
                platform,
                sdist,
                index_url,
                out,
                settings=settings,
                runner=runner,
                image="host",
                ca_bundle=self.ca_bundle,
                on_output=on_output,
            )
        return build_wheel(
            platform,
            sdist,
            index_url,
            out,
            settings=settings,
            engine=self.runner,
            runner=ContainerRunner(self.runner, cgroup_parent=self.cgroup_parent),
            ca_bundle=self.ca_bundle,
            on_output=on_output,
        )
