#!/usr/bin/env python
"""Load test of a CI storm, and a soak (run by hand, not in CI; issue 7, item 5).

A real ``wheelfarm serve`` (gunicorn with its default workers and threads, SQLite and a
local folder) proxies a local upstream. 40 packages, some hosted (uploaded binary wheels of
the platform, with PEP 658 metadata), the rest only upstream (pulled through), with wheels
of 12 KiB to 4 MiB, are fetched once to warm the cache. Then wrk plays ``--clients``
concurrent pip clients resolving and downloading the whole set (page, .metadata, wheel of
each package) for ``--duration`` seconds, while an uploader publishes files at
``--upload-rate`` a second and a real ``wheelfarm worker`` builds sdists (in Podman).
Targets: no errors, p99 < 200 ms. The soak repeats the workload (``--soak-clients``) for
``--soak-minutes`` and samples memory and open files of every server process.

    .venv/bin/python bench/bench_load.py                                  # storm + 30 min soak
    .venv/bin/python bench/bench_load.py --duration 30 --soak-minutes 0   # the storm alone

See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_index import (  # noqa: E402
    child_pids,
    cpu_seconds,
    free_port,
    git_commit,
    machine_busy_seconds,
    wheelfarm_command,
    wrk_cpu_seconds,
)
from load_background import (  # noqa: E402
    Background,
    Event,
    add_build_tools,
    in_window,
    start_background,
    stop_background,
)
from load_set import (  # noqa: E402
    MB,
    NEW_VERSION,
    PAGE_HEADERS,
    PLATFORM,
    Package,
    StormTarget,
    prepare_set,
    requirement_set,
    warm_cache,
)
from load_soak import (  # noqa: E402
    MAX_FD_GROWTH,
    MAX_GROWTH_MB,
    MAX_GROWTH_PCT,
    Growth,
    Sample,
    growth,
    growth_table,
    samples_table,
    take_sample,
)
from load_storm import (  # noqa: E402
    breakdown_cases,
    bytes_per_resolve,
    run_storm,
    write_storm_script,
)
from wrkrun import WrkResult, find_wrk, run_wrk, write_script  # noqa: E402

from index_server.serve import http_parser  # noqa: E402
from tests.conftest import ADMIN_TOKEN, LiveServer, stop_server, wait_until_answering  # noqa: E402
from tests.upstream_server import FakeUpstream  # noqa: E402

P99_TARGET_MS = 200.0


@dataclass
class Window:
    """What happened between two instants: the wrk run, the CPU, the background work."""

    wrk: WrkResult
    seconds: float
    server_cpu: float
    wrk_cpu: float
    busy_cpu: float
    uploads: list[Event] = field(default_factory=list)
    builds: list[Event] = field(default_factory=list)


@dataclass
class StormStats:
    """A window's numbers, as reported."""

    clients: int
    wrk: WrkResult
    resolves_per_s: float
    mib_per_s: float
    server_cpu_pct: float  # of all CPUs
    wrk_cpu_pct: float
    other_cpu_pct: float  # builds, uploads, this script, anything else on the machine
    server_cpu_us_per_request: float
    uploads_ok: int
    uploads_failed: int
    upload_p50_ms: float
    upload_p99_ms: float
    builds_ok: int
    builds_failed: int
    upstream_requests: int = 0  # for the storm's packages: 0 if the cache stayed warm
    warmup_errors: int = 0
    after_check: str = ""  # what was wrong when every URL was fetched again afterwards

    @classmethod
    def of(cls, window: Window, clients: int, requests_per_resolve: int) -> StormStats:
        w, seconds = window.wrk, window.seconds
        cpus = os.cpu_count() or 1
        other = max(0.0, window.busy_cpu - window.server_cpu - window.wrk_cpu)
        upload_ms = sorted((e.ended - e.started) * 1000 for e in window.uploads)
        return cls(
            clients=clients,
            wrk=w,
            resolves_per_s=round(w.rps / requests_per_resolve, 2),
            mib_per_s=round(w.bytes / MB / (w.duration_us / 1e6), 1),
            server_cpu_pct=round(100 * window.server_cpu / seconds / cpus, 1),
            wrk_cpu_pct=round(100 * window.wrk_cpu / seconds / cpus, 1),
            other_cpu_pct=round(100 * other / seconds / cpus, 1),
            server_cpu_us_per_request=round(1e6 * window.server_cpu / max(1, w.requests), 1),
            uploads_ok=sum(e.ok for e in window.uploads),
            uploads_failed=sum(not e.ok for e in window.uploads),
            upload_p50_ms=round(_percentile(upload_ms, 50), 1),
            upload_p99_ms=round(_percentile(upload_ms, 99), 1),
            builds_ok=sum(e.ok for e in window.builds),
            builds_failed=sum(not e.ok for e in window.builds),
        )

    def to_json(self) -> dict[str, object]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "wrk"},
            **self.wrk.to_json(),
            "errors": self.wrk.errors,
        }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


# ---------------------------------------------------------------------------------------
# The server, as in production


def start_production_server(
    data_dir: Path, log: Path, upstream_url: str, workers: int | None, threads: int | None
) -> LiveServer:
    """``wheelfarm serve`` with its defaults, unless --workers/--threads are given."""
    from index_server.serve import default_workers

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHEELFARM_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        WHEELFARM_DATA_DIR=str(data_dir),
        WHEELFARM_ADMIN_TOKEN=ADMIN_TOKEN,
        WHEELFARM_UPSTREAM_URL=upstream_url,
    )
    command = [wheelfarm_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", str(workers)] if workers else []
    command += ["--threads", str(threads)] if threads else []
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=data_dir
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_answering(url + "/health", process, log, "server", 60)
    expected = workers or default_workers()
    deadline = time.monotonic() + 30
    while len(child_pids(process.pid)) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return LiveServer(url, data_dir, process, env)


def server_pids(server: LiveServer) -> dict[str, int]:
    pids = {"gunicorn master": server.process.pid}
    for number, pid in enumerate(sorted(child_pids(server.process.pid)), 1):
        pids[f"gunicorn worker {number}"] = pid
    return pids


def log_problems(log: Path) -> list[str]:
    """Tracebacks and ERROR/CRITICAL lines in a server or worker log."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if any(w in line for w in ("Traceback", " ERROR ", "CRITICAL"))]


# ---------------------------------------------------------------------------------------
# The set


def describe_set(targets: list[StormTarget]) -> dict[str, object]:
    sizes = sorted(t.wheel_bytes for t in targets)
    pages = sorted(t.page_files for t in targets)
    return {
        "packages": len(targets),
        "hosted": sum(t.package.hosted for t in targets),
        "upstream": sum(not t.package.hosted for t in targets),
        "pure_wheels": sum(t.package.pure for t in targets),
        "wheel_bytes_min": sizes[0],
        "wheel_bytes_median": int(statistics.median(sizes)),
        "wheel_bytes_max": sizes[-1],
        "bytes_per_resolve": bytes_per_resolve(targets),
        "page_files_median": int(statistics.median(pages)),
        "page_files_max": pages[-1],
        "files": [
            {
                "package": t.package.name,
                "hosted": t.package.hosted,
                "wheel": t.wheel.rsplit("/", 1)[-1],
                "bytes": t.wheel_bytes,
                "page_files": t.page_files,
            }
            for t in targets
        ],
    }


def upstream_requests_for(upstream: FakeUpstream, targets: list[StormTarget]) -> int:
    """Requests the upstream got for the storm's packages (pages and files) so far."""
    names = {t.package.name for t in targets}
    wheels = {t.wheel.rsplit("/", 1)[-1] for t in targets}

    def for_the_storm(path: str) -> bool:  # /simple/<project>/ or /files/<filename>
        if path.startswith("/simple/"):
            return path.split("/")[2] in names
        return path.removeprefix("/files/").removesuffix(".metadata") in wheels

    return sum(n for path, n in upstream.requests.items() if for_the_storm(path))


# ---------------------------------------------------------------------------------------
# The storm


def measure_window(
    server: LiveServer, background: Background, run: Callable[[], WrkResult]
) -> Window:
    pids = list(server_pids(server).values())
    started, server_before = time.monotonic(), cpu_seconds(pids)
    wrk_before, busy_before = wrk_cpu_seconds(), machine_busy_seconds()
    result = run()
    ended = time.monotonic()
    return Window(
        wrk=result,
        seconds=ended - started,
        server_cpu=cpu_seconds(pids) - server_before,
        wrk_cpu=wrk_cpu_seconds() - wrk_before,
        busy_cpu=machine_busy_seconds() - busy_before,
        uploads=in_window(background.upload_events(), started, ended),
        builds=in_window(background.build_events(), started, ended),
    )


PIP_PACED = -1  # --think-ms pip


def think_ms_arg(value: str) -> int:
    return PIP_PACED if value == "pip" else int(value)


def measure_pip_pace(
    server_url: str, packages: list[Package], targets: list[StormTarget], work: Path
) -> dict[str, float]:
    """How long a real pip works between two requests: ``pip download`` of the whole set
    (the fastest thing pip does with it: no install), minus the time the same requests take
    one after another without pip, spread over the requests. Best of three."""
    from tests.conftest import clean_client_env

    index = f"{server_url}/{PLATFORM}/simple/"
    specs = [f"{p.name}=={NEW_VERSION}" for p in packages]
    paths = [path for t in targets for path in (t.page, t.metadata, t.wheel)]
    pip_seconds, fetch_seconds = [], []
    for run in range(3):
        dest = work / f"pip-pace-{run}"
        started = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--dest",
                str(dest),
                "--index-url",
                index,
                *specs,
            ],
            env=clean_client_env(),
            check=True,
        )
        pip_seconds.append(time.monotonic() - started)
        shutil.rmtree(dest, ignore_errors=True)
        with requests.Session() as session:
            started = time.monotonic()
            for path in paths:
                session.get(server_url + path, headers=PAGE_HEADERS).raise_for_status()
            fetch_seconds.append(time.monotonic() - started)
    pip_s, fetch_s = min(pip_seconds), min(fetch_seconds)
    think = max(0.0, (pip_s - fetch_s) / len(paths) * 1000)
    return {
        "pip_seconds": round(pip_s, 3),
        "requests": len(paths),
        "fetch_seconds": round(fetch_s, 3),
        "think_ms": round(think),
    }


def storm_script(path: Path, targets: list[StormTarget], args: argparse.Namespace) -> Path:
    return write_storm_script(
        path,
        targets,
        args.wrk_threads,
        count_statuses=args.status_count == "lua",
        think_ms=args.think_ms,
    )


def run_the_storm(
    server: LiveServer,
    upstream: FakeUpstream,
    targets: list[StormTarget],
    background: Background,
    args: argparse.Namespace,
    work: Path,
) -> StormStats:
    script = storm_script(work / "storm.lua", targets, args)
    print(f"storm warm-up: {args.clients} clients, {args.warmup:g} s ...", flush=True)
    warmup = run_storm(server.url, script, args.warmup, args.clients, args.wrk_threads)
    print(f"storm: {args.clients} clients, {args.duration:g} s ...", flush=True)
    upstream_before = upstream_requests_for(upstream, targets)
    window = measure_window(
        server,
        background,
        lambda: run_storm(server.url, script, args.duration, args.clients, args.wrk_threads),
    )
    stats = StormStats.of(window, args.clients, 3 * len(targets))
    stats.upstream_requests = upstream_requests_for(upstream, targets) - upstream_before
    stats.warmup_errors = warmup.errors
    return stats


def storm_table(stats: StormStats) -> str:
    s, w = stats, stats.wrk
    return "\n".join(
        [
            "| clients | s | requests | req/s | resolves/s | MiB/s | p50 ms | p90 ms | p99 ms "
            "| max ms | errors | uploads | builds | server CPU | wrk CPU | other CPU |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {s.clients} | {w.duration_us / 1e6:.0f} | {w.requests:,} | {w.rps:,.0f} "
            f"| {s.resolves_per_s} | {s.mib_per_s} | {w.p50_us / 1000:.1f} "
            f"| {w.p90_us / 1000:.1f} | {w.p99_us / 1000:.1f} | {w.max_us / 1000:.0f} "
            f"| {w.errors} | {s.uploads_ok} | {s.builds_ok} | {s.server_cpu_pct}% "
            f"| {s.wrk_cpu_pct}% | {s.other_cpu_pct}% |",
        ]
    )


def statuses_text(w: WrkResult) -> str:
    if w.unexpected_status is None:
        return f"statuses >= 400: {w.status_errors} (wrk's count; --status-count wrk)"
    return f"statuses other than 200/304: {w.unexpected_status} {w.status_counts or ''}".strip()


def storm_details(stats: StormStats) -> str:
    s, w = stats, stats.wrk
    return (
        f"errors: socket connect/read/write {w.connect_errors}/{w.read_errors}/"
        f"{w.write_errors}, timeouts {w.timeout_errors}, {statuses_text(w)}; "
        f"uploads during the storm: {s.uploads_ok} ok, "
        f"{s.uploads_failed} failed (p50 {s.upload_p50_ms} ms, p99 {s.upload_p99_ms} ms); "
        f"builds finished: {s.builds_ok} ok, {s.builds_failed} failed; upstream requests "
        f"for the storm's packages: {s.upstream_requests}; server CPU "
        f"{s.server_cpu_us_per_request:,.0f} us a request"
    )


def verify_after(server: LiveServer, packages: list[Package], targets: list[StormTarget]) -> str:
    """Fetch every page, .metadata and wheel again and check them as pip would; "" if fine."""
    try:
        again = warm_cache(server.url, packages)
    except SystemExit as exc:
        return str(exc)
    changed = [t.package.name for t, a in zip(targets, again, strict=True) if t.wheel != a.wheel]
    return f"pages list other wheels now: {changed}" if changed else ""


BREAKDOWN_CONNECTIONS = 50


@dataclass
class KindResult:
    case: str
    paths: int
    window: Window


def run_breakdown(
    server: LiveServer,
    targets: list[StormTarget],
    background: Background,
    seconds: float,
    work: Path,
) -> list[KindResult]:
    """Each kind of request alone (pages, .metadata, wheels; hosted and upstream)."""
    if seconds <= 0:
        return []
    results = []
    for number, (case, paths, headers) in enumerate(breakdown_cases(targets)):
        print(f"breakdown: {case} ...", flush=True)
        script = write_script(work / f"kind-{number}.lua", paths, headers, sequential=True)
        run_wrk(server.url, script, 2, BREAKDOWN_CONNECTIONS, 2)  # warm-up

        def run(script: Path = script) -> WrkResult:
            return run_wrk(server.url, script, seconds, BREAKDOWN_CONNECTIONS, 2)[0]

        results.append(KindResult(case, len(paths), measure_window(server, background, run)))
    return results


def breakdown_table(results: list[KindResult]) -> str:
    lines = [
        f"| request ({BREAKDOWN_CONNECTIONS} connections) | paths | req/s | KiB/response "
        "| p50 ms | p99 ms | errors | server CPU us/req | wrk CPU us/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        w, requests = r.window.wrk, max(1, r.window.wrk.requests)
        lines.append(
            f"| {r.case} | {r.paths} | {w.rps:,.0f} | {w.bytes / requests / 1024:,.1f} "
            f"| {w.p50_us / 1000:.1f} | {w.p99_us / 1000:.1f} | {w.errors} "
            f"| {1e6 * r.window.server_cpu / requests:,.0f} "
            f"| {1e6 * r.window.wrk_cpu / requests:,.0f} |"
        )
    return "\n".join(lines)


def breakdown_json(results: list[KindResult]) -> list[dict[str, object]]:
    return [
        {
            "case": r.case,
            "paths": r.paths,
            **r.window.wrk.to_json(),
            "server_cpu_us_per_request": round(
                1e6 * r.window.server_cpu / max(1, r.window.wrk.requests), 1
            ),
        }
        for r in results
    ]


# ---------------------------------------------------------------------------------------
# The soak


@dataclass
class SoakResult:
    samples: list[Sample]
    windows: list[Window]
    baseline_minute: float
    growth: list[Growth] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(w.wrk.errors for w in self.windows)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and all(g.ok for g in self.growth)

    def summary(self) -> dict[str, object]:
        requests = sum(w.wrk.requests for w in self.windows)
        seconds = sum(w.wrk.duration_us for w in self.windows) / 1e6
        return {
            "segments": len(self.windows),
            "requests": requests,
            "rps": round(requests / seconds, 1) if seconds else 0.0,
            "errors": self.errors,
            "worst_segment_p99_ms": max((w.wrk.p99_us / 1000 for w in self.windows), default=0),
            "uploads_ok": sum(sum(e.ok for e in w.uploads) for w in self.windows),
            "builds_ok": sum(sum(e.ok for e in w.builds) for w in self.windows),
            "baseline_minute": self.baseline_minute,
        }

    def to_json(self) -> dict[str, object]:
        return {
            **self.summary(),
            "growth": [g.to_json() for g in self.growth],
            "samples": [s.to_json() for s in self.samples],
        }


def watched_pids(server: LiveServer, background: Background) -> dict[str, int]:
    pids = server_pids(server)
    if background.worker is not None:
        pids["build worker"] = background.worker.pid
    return pids


def run_the_soak(
    server: LiveServer,
    targets: list[StormTarget],
    background: Background,
    args: argparse.Namespace,
    work: Path,
) -> SoakResult:
    script = storm_script(work / "soak.lua", targets, args)
    pids = watched_pids(server, background)
    database = server.data_dir / "wheelfarm.sqlite3"
    started = time.monotonic()
    samples = [take_sample(0.0, pids, database)]
    windows: list[Window] = []
    print(f"soak: {args.soak_clients} clients, {args.soak_minutes:g} min ...", flush=True)
    while time.monotonic() - started < args.soak_minutes * 60:
        window = measure_window(
            server,
            background,
            lambda: run_storm(
                server.url, script, args.segment_seconds, args.soak_clients, args.wrk_threads
            ),
        )
        windows.append(window)
        time.sleep(args.gap_seconds)  # the clients' connections are closed before sampling
        sample = take_sample((time.monotonic() - started) / 60, pids, database)
        sample.segment = {
            "rps": round(window.wrk.rps, 1),
            "p99_ms": window.wrk.p99_us / 1000,
            "errors": window.wrk.errors,
        }
        samples.append(sample)
        print(f"  {progress_line(sample)}", flush=True)
    # Sample 0 was taken before the first segment: growth is read from the baseline on.
    baseline = min(args.baseline_minutes, args.soak_minutes / 3)
    return SoakResult(samples, windows, baseline, growth(samples[1:], baseline))


def progress_line(sample: Sample) -> str:
    sizes = ", ".join(f"{p.rss_mb:.0f} MB/{p.fds} fds" for p in sample.processes.values())
    seg = sample.segment
    return (
        f"{sample.minute:5.1f} min: {seg['rps']:,.0f} req/s, p99 {seg['p99_ms']:.0f} ms, "
        f"{int(seg['errors'])} errors; {sizes}"
    )


# ---------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="wrk connections")
    parser.add_argument("--duration", type=float, default=60, help="seconds of the storm")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of load before it")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument(
        "--status-count",
        choices=("lua", "wrk"),
        default="lua",
        help="lua: the script counts every status but 200/304 (costs wrk CPU); "
        "wrk: wrk's own count of statuses >= 400",
    )
    parser.add_argument(
        "--think-ms",
        type=think_ms_arg,
        default=0,
        help="a client's pause before each request, in ms; 'pip': as long as a real pip "
        "process works between its requests (measured on this set first)",
    )
    parser.add_argument(
        "--breakdown",
        type=float,
        default=0,
        help="after the storm, this many seconds of wrk on each kind of request alone",
    )
    parser.add_argument("--packages", type=int, default=40, help="size of the requirements set")
    parser.add_argument(
        "--max-releases",
        type=int,
        default=None,
        help="cap the older releases a package lists (default: realistic histories)",
    )
    parser.add_argument("--upload-rate", type=float, default=2.0, help="files uploaded a second")
    parser.add_argument(
        "--runner",
        choices=("auto", "podman", "host", "none"),
        default="auto",
        help="the build worker's runner (auto: podman if usable, else host); none: no builds",
    )
    parser.add_argument("--builds-ahead", type=int, default=1, help="jobs kept in the queue")
    parser.add_argument("--soak-minutes", type=float, default=30, help="0: no soak")
    parser.add_argument("--soak-clients", type=int, default=50)
    parser.add_argument("--segment-seconds", type=float, default=30, help="wrk run per sample")
    parser.add_argument("--gap-seconds", type=float, default=2, help="pause before a sample")
    parser.add_argument(
        "--baseline-minutes",
        type=float,
        default=5,
        help="growth is measured from here (at most a third of the soak) to the end",
    )
    parser.add_argument("--workers", type=int, default=None, help="default: wheelfarm serve's")
    parser.add_argument("--threads", type=int, default=None, help="default: wheelfarm serve's")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    return parser.parse_args(argv)


def verdicts(
    storm: StormStats, background: Background, soak: SoakResult | None, problems: list[str]
) -> list[str]:
    failures = background.failures()
    p99 = storm.wrk.p99_us / 1000
    errors = storm.wrk.errors + storm.warmup_errors
    checks = [
        (
            errors == 0 and not failures and not storm.after_check,
            f"errors: {storm.wrk.errors} in the storm ({storm.warmup_errors} in its warm-up), "
            f"{len(failures)} failed uploads, builds or build requests in the whole run; every "
            f"URL checked again after the storm: {storm.after_check or 'all fine'}",
        ),
        (p99 < P99_TARGET_MS, f"p99 {p99:.1f} ms (< {P99_TARGET_MS:.0f} ms)"),
        (not problems, f"{len(problems)} error lines in the server and worker logs"),
    ]
    if soak is not None:
        checks.append(
            (
                soak.ok,
                f"soak: memory growth < {MAX_GROWTH_PCT:g}% and < {MAX_GROWTH_MB:g} MB, open "
                f"files +{MAX_FD_GROWTH} at most, same PIDs, from minute "
                f"{soak.baseline_minute:.1f} to {soak.samples[-1].minute:.1f}; "
                f"{soak.errors} errors",
            )
        )
    return [("PASS " if ok else "FAIL ") + text for ok, text in checks]


def machine_info() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "python": host_platform.python_version(),
        "kernel": host_platform.release(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    find_wrk()
    work = Path(tempfile.mkdtemp(prefix="wheelfarm-load-"))
    report: dict[str, object] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine_info(),
        "http_parser": http_parser(),
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    upstream = FakeUpstream(mode="json")
    server: LiveServer | None = None
    background: Background | None = None
    passed = False
    try:
        if args.runner != "none":
            add_build_tools(upstream)
        server = start_production_server(
            work / "data", work / "server.log", upstream.url, args.workers, args.threads
        )
        report["server_pids"] = server_pids(server)
        packages = requirement_set(args.packages, args.max_releases)
        seconds = prepare_set(packages, upstream, server.url, server.token("upload"), work)
        print(f"set ready in {seconds:.1f} s; warming the cache ...", flush=True)
        targets = warm_cache(server.url, packages)
        report["set"] = describe_set(targets)
        if args.think_ms == PIP_PACED:
            pace = measure_pip_pace(server.url, packages, targets, work)
            report["pip_pace"] = pace
            args.think_ms = pace["think_ms"]
            print(f"pip's pace: {pace}", flush=True)
        background = start_background(
            server, upstream, args.upload_rate, args.runner, args.builds_ahead, work
        )
        print(f"builds: {background.runner} ({background.runner_why})", flush=True)

        storm = run_the_storm(server, upstream, targets, background, args, work)
        storm.after_check = verify_after(server, packages, targets)
        report["storm"] = storm.to_json()
        kinds = run_breakdown(server, targets, background, args.breakdown, work)
        report["breakdown"] = breakdown_json(kinds)
        soak = run_the_soak(server, targets, background, args, work) if args.soak_minutes else None
        if soak is not None:
            report["soak"] = soak.to_json()
        report["server_pids_at_end"] = server_pids(server)
        problems = log_problems(work / "server.log") + log_problems(work / "worker.log")
        report["log_problems"] = problems[:50]
        report["background"] = {
            "runner": background.runner,
            "runner_why": background.runner_why,
            "uploads": len(background.upload_events()),
            "builds": len(background.build_events()),
            "failures": background.failures(),
        }
        report["verdicts"] = verdicts(storm, background, soak, problems)
        passed = all(v.startswith("PASS") for v in report["verdicts"])  # type: ignore[attr-defined]
        print_report(report, storm, kinds, soak, args)
    finally:
        if background is not None:
            stop_background(background)
        if server is not None:
            stop_server(server)
        upstream.close()
        if args.keep:
            print(f"kept: data, logs and scripts in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


def print_report(
    report: dict[str, object],
    storm: StormStats,
    kinds: list[KindResult],
    soak: SoakResult | None,
    args: argparse.Namespace,
) -> None:
    described = report["set"]
    assert isinstance(described, dict)
    print()
    print(
        f"## wheelfarm load test: CI storm ({described['packages']} packages, "
        f"{described['hosted']} hosted + {described['upstream']} upstream; wheels "
        f"{described['wheel_bytes_min'] / 1024:.0f} KiB-"
        f"{described['wheel_bytes_max'] / MB:.1f} MiB, median "
        f"{described['wheel_bytes_median'] / 1024:.0f} KiB, "
        f"{described['bytes_per_resolve'] / MB:.1f} MiB a resolve; pages of "
        f"{described['page_files_median']} files (median) to {described['page_files_max']}; "
        f"{os.cpu_count()} CPUs shared by server, wrk, uploads and builds; HTTP parser: "
        f"{report['http_parser']})"
    )
    print()
    print(storm_table(storm))
    print()
    print(storm_details(storm))
    if kinds:
        print()
        print(breakdown_table(kinds))
    if soak is not None:
        summary = soak.summary()
        print()
        print(
            f"### soak: {args.soak_clients} clients, {args.soak_minutes:g} min, "
            f"{summary['rps']:,.0f} req/s on average, worst p99 of a segment "
            f"{summary['worst_segment_p99_ms']:.0f} ms, {summary['uploads_ok']} uploads, "
            f"{summary['builds_ok']} builds"
        )
        print()
        print(samples_table(soak.samples))
        print()
        print(growth_table(soak.growth))
    print()
    for line in report["verdicts"]:  # type: ignore[attr-defined]
        print(line)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results_dir / f"load-{stamp}-{args.clients}c.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults: {out}")


if __name__ == "__main__":
    sys.exit(main())
