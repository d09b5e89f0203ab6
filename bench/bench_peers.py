"""Peers in one run: the same pages, the same wrk, five servers.

On one data set (a 50-file project page and a 1,500-file page, `bench/fill.py`), with the
same wrk settings (2 threads, 32 connections, 10 s, pip's Accept header, no gzip) and in
one run, one after the other:

- ``nginx pre-rendered``: nginx serving wheelfarm's own JSON pages saved as plain files
  (the ceiling: what this machine serves as files);
- ``wheelfarm exported``: ``wheelfarm export`` into a folder, served by nginx with the
  shipped config (deploy/nginx/: Accept negotiation, misses to the server);
- ``wheelfarm dynamic``: ``wheelfarm serve`` (2 workers x 2 threads);
- ``simple-repository-server`` (2 uvicorn workers) over a folder of the same files;
- ``pypiserver`` (gunicorn, 2 gevent workers, its caching backend) over that folder.

The peers are installed from PyPI into their own venvs under ``bench/peers/``
(git-ignored) the first time. Prints a table with each server's rate against nginx's on
pre-rendered files, and the done-criterion of the static export: the exported read path
reaches at least half of it, for both pages.

    .venv/bin/python bench/bench_peers.py [--duration 10] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_index import free_port, start_server, stop_server, wheelfarm_command  # noqa: E402
from fill import PLATFORM, fill_index  # noqa: E402
from inprocess import PIP_ACCEPT  # noqa: E402
from wrkrun import WrkResult, find_wrk, run_wrk, write_script  # noqa: E402

from index_server.config import Settings  # noqa: E402
from index_server.db.engine import read_connection  # noqa: E402
from index_server.repository import list_project_files  # noqa: E402
from index_server.services import build_services  # noqa: E402

PEERS = HERE / "peers"
PEER_REQUIREMENTS = {
    "simple-repository-server": ["simple-repository-server", "uvicorn"],
    "pypiserver": ["pypiserver[cache]", "gunicorn", "gevent"],
}
PAGES = {"50-file page": "bench-project-00000", "1,500-file page": "big-project"}
HEADERS = {"Accept": PIP_ACCEPT}  # and no Accept-Encoding: no gzip
NGINX_HTTP = """
worker_processes 2;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{body}
}}
"""
PRERENDERED_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        root {root};
        index index.json;
        types {{ application/vnd.pypi.simple.v1+json json; }}
    }}
"""
EXPORTED_SERVER = """
    include wheelfarm-http.conf;
    upstream wheelfarm_server {{ server {upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        include wheelfarm-server.conf;
    }}
"""


# --- the peers' venvs and processes -----------------------------------------------------


def peer_venv(name: str) -> Path:
    """The peer's venv (bin folder), made and filled from PyPI with pip the first time."""
    venv = PEERS / name
    marker = venv / "installed.json"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *PEER_REQUIREMENTS[name]], check=True)
        listed = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        marker.write_text(listed)
    return venv / "bin"


def peer_version(name: str) -> str:
    installed = json.loads((PEERS / name / "installed.json").read_text())
    versions = {p["name"].lower(): p["version"] for p in installed}
    return versions.get(name, "?")


def wait_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{url} did not answer:\n{log.read_text()[-3000:]}")


def start_process(
    name: str, command: list[str], health: str, work: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    log = work / f"{name}.log"
    process = subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=work
    )
    wait_answering(health, process, log)
    return process, log


def stopper(process: subprocess.Popen[bytes]):  # type: ignore[no-untyped-def]
    def stop() -> None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return stop


def nginx_command(name: str, body: str, work: Path) -> list[str]:
    """nginx (non-daemon) on its own config folder, with the shipped files linked in."""
    folder = work / name
    folder.mkdir()
    for shipped in (REPO / "deploy" / "nginx").glob("wheelfarm-*.conf"):
        (folder / shipped.name).symlink_to(shipped)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = folder / "nginx.conf"
    conf.write_text(user + NGINX_HTTP.format(dir=folder, body=body))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    command = [binary, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    return command


# --- the data set -----------------------------------------------------------------------


def peer_folder(data_dir: Path, out: Path) -> None:
    """The benchmarked projects' files as a folder of files (``<project>/<filename>``), each
    4 KiB, as the peers serve them."""
    services = build_services(Settings.from_env({}, data_dir=data_dir, upstream_urls=()))
    try:
        with read_connection(services.engine) as conn:
            for project in PAGES.values():
                (out / project).mkdir(parents=True)
                for record in list_project_files(conn, project):
                    if record.platform not in ("", PLATFORM):
                        continue
                    body = (record.filename.encode() * 4096)[:4096]
                    (out / project / record.filename).write_bytes(body)
    finally:
        services.engine.dispose()


def prerender(server_url: str, out: Path) -> dict[str, int]:
    """wheelfarm's JSON pages (as pip asks for them) saved as files; their file counts."""
    counts = {}
    for project in PAGES.values():
        request = urllib.request.Request(
            f"{server_url}/{PLATFORM}/simple/{project}/", headers=HEADERS
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        folder = out / PLATFORM / "simple" / project
        folder.mkdir(parents=True)
        (folder / "index.json").write_bytes(body)
        counts[project] = len(json.loads(body)["files"])
    return counts


def listed_files(url: str) -> int:
    """How many files a project page lists (JSON or HTML, whichever the server answers)."""
    request = urllib.request.Request(url, headers=HEADERS)
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
        content_type = response.headers.get("Content-Type", "")
    if "json" in content_type:
        return len(json.loads(body)["files"])
    return body.count(b"<a ")


# --- measuring --------------------------------------------------------------------------


def measure(url: str, path: str, args: argparse.Namespace, scripts: Path) -> WrkResult:
    script = write_script(scripts / f"{abs(hash((url, path)))}.lua", [path], HEADERS)
    run_wrk(url, script, 2, args.connections, args.threads)  # warm-up
    result, _ = run_wrk(url, script, args.duration, args.connections, args.threads)
    return result


def table(results: dict[str, dict[str, WrkResult]], versions: dict[str, str]) -> str:
    base = results["nginx pre-rendered"]
    head = "| server | " + " | ".join(f"{p} req/s | p99 ms | vs nginx" for p in PAGES) + " |"
    lines = [head, "|---" * (1 + 3 * len(PAGES)) + "|"]
    for name, by_page in results.items():
        cells = [f"{name} {versions.get(name, '')}".strip()]
        for page in PAGES:
            result = by_page[page]
            ratio = result.rps / base[page].rps if base[page].rps else 0.0
            errors = f" ({result.errors} errors)" if result.errors else ""
            cells += [f"{result.rps:,.1f}{errors}", f"{result.p99_us / 1000:.1f}", f"{ratio:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    find_wrk()
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        raise SystemExit(
            "nginx is not installed: apt-get install nginx (or .ci/setup.d/55-nginx.sh)"
        )
    bins = {name: peer_venv(name) for name in PEER_REQUIREMENTS}
    work = Path(tempfile.mkdtemp(prefix="wheelfarm-peers-"))
    scripts = work / "scripts"
    scripts.mkdir()
    data_dir = work / "data"
    fill = fill_index(
        Settings.from_env({}, data_dir=data_dir, upstream_urls=()),
        n_projects=100, files_per_project=50, big_files=1500,
    )  # fmt: skip
    peer_root = work / "peer-files"
    peer_folder(data_dir, peer_root)
    results: dict[str, dict[str, WrkResult]] = {}
    counts: dict[str, dict[str, int]] = {}
    load: dict[str, float] = {}

    dynamic = start_server(data_dir, 2, 2, work)
    try:
        expected = prerender(dynamic.url, work / "prerendered")
        subprocess.run(
            [wheelfarm_command(), "--data-dir", str(data_dir), "--upstream-url", "none",
             "export", "--target", str(work / "export")],
            check=True, capture_output=True,
        )  # fmt: skip
        servers = []
        port = free_port()
        command = nginx_command(
            "nginx-prerendered",
            PRERENDERED_SERVER.format(port=port, root=work / "prerendered"),
            work,
        )
        servers.append(
            (
                "nginx pre-rendered",
                command,
                f"http://127.0.0.1:{port}",
                f"/{PLATFORM}/simple/",
                None,
            )
        )
        port = free_port()
        command = nginx_command(
            "nginx-exported",
            EXPORTED_SERVER.format(
                port=port, root=work / "export", upstream=dynamic.url.removeprefix("http://")
            ),
            work,
        )
        servers.append(
            (
                "wheelfarm exported",
                command,
                f"http://127.0.0.1:{port}",
                f"/{PLATFORM}/simple/",
                None,
            )
        )
        servers.append(("wheelfarm dynamic", None, dynamic.url, f"/{PLATFORM}/simple/", None))
        port = free_port()
        servers.append((
            "simple-repository-server",
            [str(bins["simple-repository-server"] / "python"), "-m", "uvicorn", "--factory",
             "--app-dir", str(HERE), "peer_apps:simple_repository_app", "--workers", "2",
             "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
             "--log-level", "warning"],
            f"http://127.0.0.1:{port}", "/simple/",
            {**os.environ, "BENCH_PEER_ROOT": str(peer_root)},
        ))  # fmt: skip
        port = free_port()
        servers.append((
            "pypiserver",
            [str(bins["pypiserver"] / "gunicorn"), "--workers", "2", "--worker-class", "gevent",
             "--bind", f"127.0.0.1:{port}", f"pypiserver:app(root={str(peer_root)!r})"],
            f"http://127.0.0.1:{port}", "/simple/", None,
        ))  # fmt: skip
        stops = []
        try:
            for name, command, url, prefix, env in servers:
                if command is not None:
                    process, _ = start_process(
                        name.replace(" ", "-"), command, url + prefix + PAGES["50-file page"] + "/",
                        work, env,
                    )  # fmt: skip
                    stops.append(stopper(process))
                counts[name] = {
                    page: listed_files(f"{url}{prefix}{project}/")
                    for page, project in PAGES.items()
                }
            by_name = {name: (url, prefix) for name, _, url, prefix, _ in servers}
            # nginx on pre-rendered files before and after the export through nginx: the
            # better of its two figures is the ceiling the export is compared with.
            order = ["nginx pre-rendered", "wheelfarm exported", "nginx pre-rendered"]
            order += [name for name in by_name if name not in order]
            for name in order:
                url, prefix = by_name[name]
                for page, project in PAGES.items():
                    result = measure(url, f"{prefix}{project}/", args, scripts)
                    print(f"{name:26} {page:16} {result.rps:10,.1f} req/s", flush=True)
                    best = results.setdefault(name, {}).get(page)
                    if best is None or result.rps > best.rps:
                        results[name][page] = result
                load[name] = os.getloadavg()[0]
        finally:
            for stop in stops:
                stop()
    finally:
        stop_server(dynamic)

    versions = {
        "simple-repository-server": peer_version("simple-repository-server"),
        "pypiserver": peer_version("pypiserver"),
    }
    print()
    sizes = " and ".join(str(expected[project]) for project in PAGES.values())
    print(
        f"data set: {fill.rows} files in {len(fill.project_names) + 1} projects; pages of {sizes}"
    )
    print(f"files listed per server: {json.dumps(counts)}")
    loads = json.dumps({k: round(v, 2) for k, v in load.items()})
    print(f"load average (1 min) after each server: {loads}")
    print()
    print(table(results, versions))
    base, exported = results["nginx pre-rendered"], results["wheelfarm exported"]
    ok = all(exported[p].rps >= 0.5 * base[p].rps for p in PAGES)
    wrong = [n for n, c in counts.items() if list(c.values()) != list(expected.values())]
    print()
    print(f"exported through nginx >= 50% of nginx on pre-rendered files, both pages: "
          f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    if wrong:
        print(f"WARNING: these servers list other file counts than wheelfarm: {wrong}")
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
