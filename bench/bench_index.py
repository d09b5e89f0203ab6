#!/usr/bin/env python
"""Speed benchmark of the wheelfarm index server (run by hand, not in CI).

Fills an index (by default 2,000 projects of 20 files plus one of 1,500 files) with bulk
inserts into the real schema, runs ``wheelfarm serve`` as in production and measures it with
wrk on loopback: project pages (HTML, JSON; over many projects and a single one), the
1,500-file page, the root page, a 304 revalidation and a small download. It also counts the
SQL statements per page request in-process (they must not grow with the index), and can
profile the hot path (``--profile``) and compare gunicorn settings (``--sweep 2x1,2x4``).

    .venv/bin/python bench/bench_index.py                 # the whole run, ~3 minutes
    .venv/bin/python bench/bench_index.py --duration 5 --cases project-json-random
    .venv/bin/python bench/bench_index.py --data-dir /tmp/wfb --keep   # reuse the fill later

See bench/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import platform as host_platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from fill import PLATFORM, FillResult, fill_index  # noqa: E402
from inprocess import HTML_ACCEPT, count_queries, profile_requests  # noqa: E402
from wrkrun import PIP_ACCEPT, WrkResult, find_wrk, run_wrk, write_script  # noqa: E402
from wrkrun import PIP_HEADERS as PAGE_HEADERS  # noqa: E402

from index_server.config import Settings  # noqa: E402

SIMPLE = f"/{PLATFORM}/simple/"
FILL_INFO = "bench-fill.json"
# What pip sends for an index page (pip's collector, plus requests' Accept-Encoding).
PIP_HEADERS = {**PAGE_HEADERS, "Cache-Control": "max-age=0"}
HTML_HEADERS = {"Accept": HTML_ACCEPT, "Accept-Encoding": "gzip, deflate"}

TARGETS = {
    "project page": "project-json-random (and -html-random) >= 3,000 req/s, p99 < 30 ms",
    "big page": "big-html and big-json >= 300 req/s",
    "304": "project-304-* at least as fast as the matching project page",
}


@dataclass
class Case:
    name: str
    what: str
    paths: list[str]
    headers: dict[str, str]
    etags: list[str] | None = None
    expect_status: int = 200


@dataclass
class CaseResult:
    case: str
    what: str
    workers: int
    threads: int
    wrk: WrkResult
    server_cpu_us_per_request: float
    wrk_cpu_us_per_request: float
    other_load_pct: float  # CPU used by other processes on the machine during the run
    all_rps: list[float] = field(default_factory=list)  # every repeat; the best is reported

    @property
    def ceiling_rps(self) -> float:
        """What all CPUs could serve if the server and wrk alone had them: a CPU-bound limit."""
        per_request = self.server_cpu_us_per_request + self.wrk_cpu_us_per_request
        return (os.cpu_count() or 1) * 1e6 / per_request if per_request else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "case": self.case,
            "what": self.what,
            "workers": self.workers,
            "threads": self.threads,
            **self.wrk.to_json(),
            "server_cpu_us_per_request": round(self.server_cpu_us_per_request, 1),
            "wrk_cpu_us_per_request": round(self.wrk_cpu_us_per_request, 1),
            "ceiling_rps": round(self.ceiling_rps, 1),
            "other_load_pct": round(self.other_load_pct, 1),
            "all_rps": self.all_rps,
        }


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    workers: int
    threads: int
    worker_pids: list[int] = field(default_factory=list)
    warmed: set[object] = field(default_factory=set)  # path sets already warmed up


# ---------------------------------------------------------------------------------------
# The index


def settings_for(data_dir: Path) -> Settings:
    return Settings.from_env({}, data_dir=data_dir, upstream_urls=())


def prepare_index(args: argparse.Namespace, data_dir: Path) -> FillResult:
    info_path = data_dir / FILL_INFO
    wanted = {
        "projects": args.projects,
        "files_per_project": args.files_per_project,
        "big_files": args.big_files,
    }
    if info_path.exists():
        saved = json.loads(info_path.read_text())
        if saved["params"] != wanted:
            raise SystemExit(
                f"{data_dir} was filled with {saved['params']}, not {wanted}: "
                "use another --data-dir"
            )
        print(f"reusing the index in {data_dir} ({saved['result']['rows']} files)")
        return FillResult(**saved["result"])
    print(
        f"filling {data_dir}: {args.projects} projects x {args.files_per_project} files"
        f" + {args.big_files}-file project ...",
        flush=True,
    )
    result = fill_index(
        settings_for(data_dir), args.projects, args.files_per_project, args.big_files
    )
    info_path.write_text(json.dumps({"params": wanted, "result": asdict(result)}))
    print(f"  {result.rows} file rows in {result.seconds:.1f} s")
    return result


# ---------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wheelfarm_command() -> str:
    found = Path(sys.executable).parent / "wheelfarm"
    if found.exists():
        return str(found)
    which = shutil.which("wheelfarm")
    if not which:
        raise SystemExit("the wheelfarm command is not installed (pip install -e '.[server]')")
    return which


def start_server(
    data_dir: Path, workers: int, threads: int, log_dir: Path, floor_app: str = ""
) -> Server:
    """``wheelfarm serve`` (as in production), or gunicorn with a baseline app of floor_app.py."""
    port = free_port()
    log = log_dir / f"server-{floor_app or 'wheelfarm'}-{workers}x{threads}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHEELFARM_")}
    # The server runs the code of the tree this script is in (a snapshot, or the checkout).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if floor_app:
        # The same gunicorn options as index_server/serve.py, with a trivial app.
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            f"--bind=127.0.0.1:{port}",
            f"--workers={workers}",
            f"--threads={threads}",
            f"--worker-class={'gthread' if threads > 1 else 'sync'}",
            "--timeout=120",
            "--keep-alive=5",
            "--no-control-socket",
            f"--chdir={HERE}",
            f"floor_app:{floor_app}",
        ]
        health = f"{SIMPLE}floor/"
    else:
        command = [
            wheelfarm_command(),
            "--data-dir",
            str(data_dir),
            "--upstream-url",
            "none",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--threads",
            str(threads),
        ]
        health = "/health"
    process = subprocess.Popen(
        command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=data_dir
    )
    url = f"http://127.0.0.1:{port}"
    server = Server(process, url, log, workers, threads)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + health, timeout=2):
                pass
        except OSError:
            time.sleep(0.1)
            continue
        server.worker_pids = child_pids(process.pid)
        if len(server.worker_pids) >= workers:
            return server
        time.sleep(0.1)
    stop_server(server)
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def child_pids(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent busy since boot (not idle, not waiting for I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    guest = sum(values[8:10])  # already counted in user/nice
    return (sum(values) - idle - guest) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, threshold_pct: float = 20.0) -> float:
    """Wait (up to max_wait s) until other processes use < threshold of the CPUs; their use."""
    deadline = time.monotonic() + max_wait
    cpus = os.cpu_count() or 1
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy_pct = (machine_busy_seconds() - before) / cpus * 100
        if busy_pct < threshold_pct or time.monotonic() >= deadline:
            return busy_pct


def wrk_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------
# Checking the pages before measuring them


class Http:
    """One keep-alive connection, for the checks and for collecting ETags."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    def close(self) -> None:
        self.conn.close()


def check_pages(server: Server, fill: FillResult) -> str:
    """Fail loudly unless the pages list what was filled: a fast wrong page proves nothing.

    Returns the path of the small file to download, as the project page links it.
    """
    web = Http(server.url)
    try:
        name = fill.project_names[0]
        status, _, body = web.get(f"{SIMPLE}{name}/", HTML_HEADERS)
        anchors = body.count(b"<a href=")
        if status != 200 or anchors != fill.files_per_project[name]:
            raise SystemExit(f"{name}: HTTP {status}, {anchors} links")
        status, headers, body = web.get(f"{SIMPLE}{name}/", PIP_HEADERS)
        page = json.loads(body)
        if status != 200 or len(page["files"]) != fill.files_per_project[name]:
            raise SystemExit(f"{name} JSON: HTTP {status}, {len(page.get('files', []))} files")
        etag = headers["etag"]
        download = download_path(page, fill.download_file, f"{SIMPLE}{name}/")
        status, _, _ = web.get(f"{SIMPLE}{name}/", {**PIP_HEADERS, "If-None-Match": etag})
        if status != 304:
            raise SystemExit(f"{name}: If-None-Match {etag} gave HTTP {status}, not 304")
        if fill.big_project:
            status, _, body = web.get(f"{SIMPLE}{fill.big_project}/", PIP_HEADERS)
            count = len(json.loads(body)["files"])
            if status != 200 or count != fill.files_per_project[fill.big_project]:
                raise SystemExit(f"{fill.big_project}: HTTP {status}, {count} files")
        status, _, body = web.get(SIMPLE, HTML_HEADERS)
        listed = body.count(b"<a href=")
        if status != 200 or listed != len(fill.files_per_project):
            raise SystemExit(f"root page: HTTP {status}, {listed} projects listed")
        status, _, body = web.get(download, {})
        if status != 200 or len(body) != 4096:
            raise SystemExit(f"download {download}: HTTP {status}, {len(body)} bytes")
        return download
    finally:
        web.close()


def download_path(page: dict[str, object], filename: str, page_path: str) -> str:
    """The file's URL path as the page gives it (relative to the page), resolved."""
    from urllib.parse import urldefrag, urljoin

    for entry in page["files"]:  # type: ignore[attr-defined]
        if entry["filename"] == filename:
            return urldefrag(urljoin(page_path, entry["url"])).url
    raise SystemExit(f"{filename} is not on {page_path}")


def collect_etags(server: Server, paths: list[str], headers: dict[str, str]) -> list[str]:
    web = Http(server.url)
    try:
        etags = []
        for path in paths:
            status, response_headers, _ = web.get(path, headers)
            if status != 200:
                raise SystemExit(f"{path}: HTTP {status}")
            etags.append(response_headers["etag"])
        return etags
    finally:
        web.close()


# ---------------------------------------------------------------------------------------
# The cases


ALL_CASES = (
    "project-html-random",
    "project-html-single",
    "project-json-random",
    "project-json-single",
    "big-html",
    "big-json",
    "root-html",
    "project-304-random",
    "project-304-single",
    "download-small",
)
SWEEP_CASES = ("project-json-random", "big-json", "project-304-random")


def build_cases(
    server: Server, fill: FillResult, wanted: list[str], gzip_ok: bool, download: str = ""
) -> list[Case]:
    def hdrs(base: dict[str, str]) -> dict[str, str]:
        return base if gzip_ok else {k: v for k, v in base.items() if k != "Accept-Encoding"}

    html, pip = hdrs(HTML_HEADERS), hdrs(PIP_HEADERS)
    pages = [f"{SIMPLE}{n}/" for n in fill.project_names]
    single = [pages[len(pages) // 2]]
    big = [f"{SIMPLE}{fill.big_project}/"] if fill.big_project else []
    cases = []
    for name in wanted:
        if name.startswith("big-") and not big:
            continue
        if name == "project-html-random":
            cases.append(Case(name, "project page, HTML, random of all projects", pages, html))
        elif name == "project-html-single":
            cases.append(Case(name, "project page, HTML, one project", single, html))
        elif name == "project-json-random":
            cases.append(Case(name, "project page, JSON (pip), random projects", pages, pip))
        elif name == "project-json-single":
            cases.append(Case(name, "project page, JSON (pip), one project", single, pip))
        elif name == "big-html":
            cases.append(Case(name, "1,500-file page, HTML", big, html))
        elif name == "big-json":
            cases.append(Case(name, "1,500-file page, JSON (pip)", big, pip))
        elif name == "root-html":
            cases.append(Case(name, "root page (all projects), HTML", [SIMPLE], html))
        elif name == "project-304-random":
            etags = collect_etags(server, pages, pip)
            cases.append(
                Case(name, "304 revalidation (JSON), random projects", pages, pip, etags, 304)
            )
        elif name == "project-304-single":
            etags = collect_etags(server, single, pip)
            cases.append(
                Case(name, "304 revalidation (JSON), one project", single, pip, etags, 304)
            )
        elif name == "download-small":
            cases.append(Case(name, "file download, 4 KiB sdist", [download], {}))
        else:
            raise SystemExit(f"unknown case {name!r}; cases: {', '.join(ALL_CASES)}")
    return cases


def warm_up(server: Server, case: Case, args: argparse.Namespace, scripts: Path) -> None:
    """Request every path in turn until every worker has most likely cached every page.

    Pages are cached per worker, and which worker answers is about a coin toss: after k
    passes a page is missing from a worker with chance about (1 - 1/workers)^k, so
    5 x workers passes (at most two minutes) leave next to none.
    The first warm-up of a set of paths on a server does that; later ones run --warmup s.
    """
    key = (tuple(sorted(case.headers.items())), len(case.paths), case.paths[0])
    wanted = 5 * server.workers * len(case.paths) if key not in server.warmed else 0
    # A new connection per request: a kept-alive one sticks to one worker, and wrk's few
    # connections can be spread unevenly; fresh ones go to whichever worker accepts first.
    headers = {**case.headers, "Connection": "close"}
    script = write_script(
        scripts / f"{case.name}-warmup.lua", case.paths, headers, case.etags, True
    )
    done = 0
    deadline = time.monotonic() + 120
    while True:
        result, _ = run_wrk(server.url, script, args.warmup, args.connections, args.wrk_threads)
        done += result.requests
        if done >= wanted:
            break
        if time.monotonic() > deadline:
            print(
                f"  (warm-up cut short: {done} of {wanted} requests in 2 minutes; some pages"
                " may still be rendered during the measurement)",
                flush=True,
            )
            break
    server.warmed.add(key)


def run_case(server: Server, case: Case, args: argparse.Namespace, scripts: Path) -> CaseResult:
    if args.warmup > 0:
        warm_up(server, case, args, scripts)
    script = write_script(scripts / f"{case.name}.lua", case.paths, case.headers, case.etags)
    runs = []
    for _ in range(max(1, args.repeat)):
        if args.quiet_wait > 0:
            busy = wait_for_quiet(args.quiet_wait)
            if busy >= 20:
                print(f"  (the machine is busy: {busy:.0f}% CPU used by others)", flush=True)
        cpu_before, wrk_before = cpu_seconds(server.worker_pids), wrk_cpu_seconds()
        busy_before = machine_busy_seconds()
        result, text = run_wrk(
            server.url, script, args.duration, args.connections, args.wrk_threads
        )
        server_cpu = cpu_seconds(server.worker_pids) - cpu_before
        wrk_cpu = wrk_cpu_seconds() - wrk_before
        other = machine_busy_seconds() - busy_before - server_cpu - wrk_cpu
        if result.errors:
            print(f"  !! {case.name}: {result.errors} errors (non-2xx/3xx or socket):\n{text}")
        per = max(result.requests, 1)
        seconds = result.duration_us / 1e6 or args.duration
        runs.append(
            CaseResult(
                case.name,
                case.what,
                server.workers,
                server.threads,
                result,
                server_cpu / per * 1e6,
                wrk_cpu / per * 1e6,
                max(0.0, other) / (seconds * (os.cpu_count() or 1)) * 100,
            )
        )
    best = max(runs, key=lambda r: r.wrk.rps)
    best.all_rps = [round(r.wrk.rps, 1) for r in runs]
    return best


def measure(
    data_dir: Path,
    fill: FillResult,
    workers: int,
    threads: int,
    case_names: list[str],
    args: argparse.Namespace,
    work: Path,
) -> list[CaseResult]:
    print(f"== server: {workers} workers x {threads} threads", flush=True)
    server = start_server(data_dir, workers, threads, work)
    try:
        download = check_pages(server, fill)
        results = []
        for case in build_cases(server, fill, case_names, not args.no_gzip, download):
            result = run_case(server, case, args, work)
            w = result.wrk
            print(
                f"  {case.name:<22} {w.rps:>8.0f} req/s  p50 {w.p50_us / 1000:6.2f} ms"
                f"  p99 {w.p99_us / 1000:6.2f} ms  errors {w.errors}"
                f"  server CPU {result.server_cpu_us_per_request:.0f} us/req"
                f"  other load {result.other_load_pct:.0f}%",
                flush=True,
            )
            results.append(result)
        return results
    finally:
        stop_server(server)


def measure_floor(
    data_dir: Path,
    fill: FillResult,
    workers: int,
    threads: int,
    args: argparse.Namespace,
    work: Path,
) -> list[CaseResult]:
    """The baselines of floor_app.py, with the project-json-random requests."""
    results = []
    for app, what in (
        ("wsgi_app", "baseline: bare WSGI app, fixed 1.5 KB page"),
        ("flask_app", "baseline: Flask route, fixed 1.5 KB page"),
    ):
        print(f"== baseline {app}: {workers} workers x {threads} threads", flush=True)
        server = start_server(data_dir, workers, threads, work, floor_app=app)
        try:
            pages = [f"{SIMPLE}{n}/" for n in fill.project_names]
            headers = PIP_HEADERS if not args.no_gzip else {"Accept": PIP_ACCEPT}
            case = Case(f"floor-{app.removesuffix('_app')}", what, pages, headers)
            result = run_case(server, case, args, work)
            print(f"  {case.name:<22} {result.wrk.rps:>8.0f} req/s", flush=True)
            results.append(result)
        finally:
            stop_server(server)
    return results


# ---------------------------------------------------------------------------------------
# Statements per request, profiles


def query_counts(fill: FillResult, data_dir: Path, work: Path) -> dict[str, object]:
    """SQL statements per request on a 10-project index and on the filled one."""
    small_dir = work / "small-index"
    per_project = fill.files_per_project[fill.project_names[0]]
    small = fill_index(settings_for(small_dir), 10, per_project, 0)
    n = len(fill.project_names)
    name = fill.project_names[n // 2]
    json_page, html_page, root = "project page JSON", "project page HTML", "root page HTML"
    cases_small = [
        (json_page, "10-project index", f"{SIMPLE}{small.project_names[5]}/", PIP_ACCEPT),
        (html_page, "10-project index", f"{SIMPLE}{small.project_names[5]}/", HTML_ACCEPT),
        (root, "10-project index", SIMPLE, HTML_ACCEPT),
    ]
    cases_big = [
        (json_page, f"{n}-project index", f"{SIMPLE}{name}/", PIP_ACCEPT),
        (html_page, f"{n}-project index", f"{SIMPLE}{name}/", HTML_ACCEPT),
        (root, f"{n}-project index", SIMPLE, HTML_ACCEPT),
    ]
    if fill.big_project:
        files = fill.files_per_project[fill.big_project]
        big_page = f"{SIMPLE}{fill.big_project}/"
        cases_big.append((json_page, f"{files}-file project", big_page, PIP_ACCEPT))
        cases_big.append((html_page, f"{files}-file project", big_page, HTML_ACCEPT))
    counts = count_queries(settings_for(small_dir), cases_small)
    counts += count_queries(settings_for(data_dir), cases_big)
    print("== SQL statements per request (SQLite trace of every statement, in-process test client)")
    print("| request | index | cold (1st) | warm | warm: pool checkouts | warm: commits |")
    print("|---|---|---:|---:|---:|---:|")
    for c in sorted(counts, key=lambda c: c.kind):
        print(
            f"| {c.kind} | {c.label} | {c.cold} | {c.warm} | {c.warm_checkouts} "
            f"| {c.warm_commits} |"
        )
    constant = True
    for kind in dict.fromkeys(c.kind for c in counts):
        same = [c for c in counts if c.kind == kind]
        colds, warms = {c.cold for c in same}, {c.warm for c in same}
        equal = len(colds) == 1 and len(warms) == 1
        constant = constant and equal
        print(
            f"{'EQUAL' if equal else 'NOT EQUAL'} {kind}: cold {sorted(colds)}, "
            f"warm {sorted(warms)} statements on every index size"
        )
    print("  project page, cold:", " | ".join(counts[0].cold_statements))
    print("  project page, warm:", " | ".join(counts[0].warm_statements))
    return {"constant": constant, "cases": [asdict(c) for c in counts]}


def cprofile_report(fill: FillResult, data_dir: Path, requests: int) -> dict[str, object]:
    paths = [f"{SIMPLE}{n}/" for n in fill.project_names]
    return profile_requests(settings_for(data_dir), paths, PIP_HEADERS, requests)


def pyspy_profile(
    data_dir: Path,
    fill: FillResult,
    args: argparse.Namespace,
    work: Path,
    workers: int,
    threads: int,
    gil: bool,
) -> dict[str, object]:
    """Sample the real server's workers with py-spy during a project-json-random run.

    With ``gil``, only the thread holding the GIL is sampled: where Python code spends CPU.
    Without, every thread the OS has running or runnable: that adds the GIL-free parts
    (sqlite3 calls, socket writes) but also threads merely woken up (queue waits).
    """
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy is not installed (.venv/bin/pip install py-spy): skipping its profile")
        return {}
    server = start_server(data_dir, workers, threads, work)
    try:
        case = build_cases(server, fill, ["project-json-random"], not args.no_gzip)[0]
        warm_up(server, case, args, work)
        raw = work / f"pyspy{'-gil' if gil else ''}.txt"
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(server.process.pid),
                "--subprocesses",
                "--rate",
                "250",
                *(["--gil"] if gil else []),
                "--duration",
                str(round(args.duration)),
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(1)
        script = write_script(work / "pyspy.lua", case.paths, case.headers)
        result, _ = run_wrk(server.url, script, args.duration, args.connections, args.wrk_threads)
        _, err = spy.communicate(timeout=args.duration + 60)
        if not raw.exists():
            print(f"py-spy failed: {err.decode(errors='replace')}")
            return {}
    finally:
        stop_server(server)
    summary = summarize_pyspy(raw.read_text())
    summary["rps_while_sampling"] = round(result.rps, 1)
    summary["raw_file"] = str(raw)
    return summary


# Where a frame's file lives decides its group in the summary.
GROUPS = (
    ("gunicorn", "gunicorn (HTTP parsing, workers)"),
    ("sqlalchemy", "SQLAlchemy"),
    ("sqlite3", "sqlite3"),
    ("werkzeug", "werkzeug"),
    ("flask", "flask"),
    ("index_server", "index_server (our code)"),
    ("packaging", "packaging"),
    ("selectors", "selectors/socket"),
    ("socket", "selectors/socket"),
    ("ssl", "selectors/socket"),
    ("threading", "threading/queues"),
    ("queue", "threading/queues"),
    ("concurrent", "threading/queues"),
)


def _group(frame: str) -> str:
    where = frame[frame.rfind("(") + 1 :] if "(" in frame else frame
    for needle, label in GROUPS:
        if f"/{needle}/" in where or where.startswith(f"{needle}/") or f"{needle}.py" in where:
            return label
    return "other (stdlib, interpreter)"


_LINE = re.compile(r":\d+\)$")  # a frame's line number: functions are counted whole


def summarize_pyspy(raw: str) -> dict[str, object]:
    """Self time per group/function and inclusive time per function, from collapsed stacks."""
    own_group: Counter[str] = Counter()
    own_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            _LINE.sub(")", f) for f in stack.split(";") if not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        total += count
        own_function[frames[-1]] += count
        own_group[_group(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    pct = lambda n: round(100 * n / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "self_by_group": [(g, pct(n)) for g, n in own_group.most_common()],
        "self_by_function": [(f, pct(n)) for f, n in own_function.most_common(25)],
        "inclusive_by_function": [(f, pct(n)) for f, n in inclusive.most_common(40)],
    }


# ---------------------------------------------------------------------------------------
# Report


def markdown_table(results: list[CaseResult]) -> str:
    lines = [
        "| case | what | workers x threads | req/s | p50 ms | p99 ms | errors "
        "| server CPU us/req | wrk CPU us/req | CPU ceiling req/s | other load |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        w = r.wrk
        lines.append(
            f"| {r.case} | {r.what} | {r.workers}x{r.threads} | {w.rps:,.0f} | "
            f"{w.p50_us / 1000:.2f} | {w.p99_us / 1000:.2f} | {w.errors} | "
            f"{r.server_cpu_us_per_request:,.0f} | {r.wrk_cpu_us_per_request:,.0f} | "
            f"{r.ceiling_rps:,.0f} | {r.other_load_pct:.0f}% |"
        )
    return "\n".join(lines)


def check_targets(results: list[CaseResult]) -> list[str]:
    by = {r.case: r.wrk for r in results}
    verdicts = []
    for name in ("project-json-random", "project-html-random"):
        if name in by:
            w = by[name]
            ok = w.rps >= 3000 and w.p99_us < 30_000
            verdicts.append(
                f"{'PASS' if ok else 'FAIL'} {name}: {w.rps:,.0f} req/s (>= 3,000), "
                f"p99 {w.p99_us / 1000:.1f} ms (< 30)"
            )
    for name in ("big-html", "big-json"):
        if name in by:
            w = by[name]
            verdicts.append(
                f"{'PASS' if w.rps >= 300 else 'FAIL'} {name}: {w.rps:,.0f} req/s (>= 300)"
            )
    for kind in ("random", "single"):
        n304, page = f"project-304-{kind}", f"project-json-{kind}"
        if n304 in by and page in by:
            ok = by[n304].rps >= by[page].rps * 0.97  # within noise counts as "as fast"
            verdicts.append(
                f"{'PASS' if ok else 'FAIL'} {n304}: {by[n304].rps:,.0f} req/s vs "
                f"{page} {by[page].rps:,.0f} req/s"
            )
    return verdicts


def git_commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def parse_sweep(text: str) -> list[tuple[int, int]]:
    configs = []
    for item in text.split(","):
        workers, _, threads = item.strip().lower().partition("x")
        configs.append((int(workers), int(threads or 1)))
    return configs


def main(argv: list[str] | None = None) -> int:
    from index_server.serve import default_workers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=2000)
    parser.add_argument("--files-per-project", type=int, default=20)
    parser.add_argument("--big-files", type=int, default=1500, help="files of the big project")
    parser.add_argument("--duration", type=float, default=10, help="seconds per case")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per case")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; best is kept")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30,
        help="before each run, wait up to this many seconds for other CPU use to drop < 20%%",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="1 = sync workers; 2 gives small pages the lowest tail (serve: 4)",
    )
    parser.add_argument(
        "--cases", default=",".join(ALL_CASES), help=f"comma list of: {', '.join(ALL_CASES)}"
    )
    parser.add_argument(
        "--sweep",
        default="",
        help="also compare gunicorn settings, e.g. 1x1,2x1,2x4,4x1 (workers x threads)",
    )
    parser.add_argument("--sweep-cases", default=",".join(SWEEP_CASES))
    parser.add_argument("--data-dir", type=Path, help="index to create or reuse (see --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the data and work files")
    parser.add_argument("--no-gzip", action="store_true", help="send no Accept-Encoding")
    parser.add_argument("--skip-queries", action="store_true", help="skip the SQL count")
    parser.add_argument(
        "--profile", action="store_true", help="also profile: py-spy on the server, cProfile"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure baselines (bare WSGI, bare Flask) under the same gunicorn settings",
    )
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    find_wrk()
    work = Path(tempfile.mkdtemp(prefix="wheelfarm-bench-"))
    data_dir = (args.data_dir or work / "index").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": host_platform.python_version(),
            "kernel": host_platform.release(),
        },
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    try:
        fill = prepare_index(args, data_dir)
        report["fill"] = {"rows": fill.rows, "seconds": round(fill.seconds, 2)}
        if not args.skip_queries:
            report["queries"] = query_counts(fill, data_dir, work)

        case_names = [c.strip() for c in args.cases.split(",") if c.strip()]
        results = measure(data_dir, fill, args.workers, args.threads, case_names, args, work)
        sweep: list[CaseResult] = []
        for workers, threads in parse_sweep(args.sweep) if args.sweep else []:
            names = [c.strip() for c in args.sweep_cases.split(",") if c.strip()]
            sweep += measure(data_dir, fill, workers, threads, names, args, work)
        if args.floor:
            results += measure_floor(data_dir, fill, args.workers, args.threads, args, work)
        report["results"] = [r.to_json() for r in results]
        report["sweep"] = [r.to_json() for r in sweep]

        if args.profile:
            profiled = cprofile_report(fill, data_dir, 5000)
            print(
                "== the Flask app alone (WSGI call in-process, warm cache, project-json-random):"
                f" {profiled['us_per_request']:.0f} us per request"
            )
            print("cProfile own time by group:")
            for group, share in profiled["self_by_group"]:
                print(f"  {share:5.1f}%  {group}")
            print(profiled["report"])
            (work / "cprofile.txt").write_text(str(profiled["report"]))
            report["cprofile"] = profiled
            for gil in (True, False):
                spy = pyspy_profile(data_dir, fill, args, work, args.workers, args.threads, gil)
                report["pyspy_gil" if gil else "pyspy_all_threads"] = spy
                if not spy:
                    continue
                mode = "--gil (thread holding the GIL)" if gil else "(all active threads)"
                print(
                    f"== py-spy {mode}, {args.workers}x{args.threads}, project-json-random "
                    f"({spy['samples']} samples, {spy['rps_while_sampling']} req/s while sampled)"
                )
                print("self time by group:")
                for group, share in spy["self_by_group"]:
                    print(f"  {share:5.1f}%  {group}")
                print("self time by function:")
                for function, share in spy["self_by_function"][:20]:
                    print(f"  {share:5.1f}%  {function}")
                print("inclusive time by function:")
                for function, share in spy["inclusive_by_function"][:30]:
                    print(f"  {share:5.1f}%  {function}")

        print()
        print(
            f"## wheelfarm index benchmark ({fill.rows:,} files, {len(fill.project_names):,}"
            f" projects; wrk {args.connections} connections, {args.wrk_threads} threads,"
            f" {args.duration:g} s per case; {os.cpu_count()} CPUs shared with wrk)"
        )
        print()
        print(markdown_table(results))
        if sweep:
            print()
            print("### gunicorn settings (workers x threads; threads=1 is the sync worker)")
            print()
            print(markdown_table(sweep))
        verdicts = check_targets(results)
        report["targets"] = verdicts
        print()
        for line in verdicts:
            print(line)
        args.results_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = args.results_dir / f"bench-{stamp}-{args.workers}x{args.threads}.json"
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nresults: {out}")
    finally:
        if args.keep:
            print(f"kept: index in {data_dir}, work files (scripts, logs, profiles) in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            if args.data_dir is None:
                shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
