#!/usr/bin/env python
"""Upstream proxy speed (run by hand, not in CI): a cached merged page against a local page,
and what a page miss costs upstream.

A local upstream (tests/upstream_server.py, JSON) serves --projects projects; the index
holds as many hosted projects of the same size. After each upstream project's first request
(counted at the upstream: one round trip each, no more), wrk measures random merged pages
and random local pages at 32 connections. Target: merged within 20% of local.

    .venv/bin/python bench/bench_proxy.py [--projects 300] [--files 20] [--duration 8]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from fill import PLATFORM, canonical, fill_index, project_display_name  # noqa: E402
from wrkrun import PIP_HEADERS, summary, warm_then_measure, write_script  # noqa: E402

from index_server.config import Settings  # noqa: E402
from tests.conftest import start_server, stop_server  # noqa: E402
from tests.upstream_server import FakeUpstream, UpstreamFile  # noqa: E402


def fill_upstream(upstream: FakeUpstream, projects: int, files: int) -> list[str]:
    names = []
    for i in range(projects):
        name = f"up-proj-{i}"
        entries = []
        for j in range(files):
            version = f"1.{j // 2}"
            filename = (
                f"up_proj_{i}-{version}.tar.gz"
                if j % 2 == 0
                else f"up_proj_{i}-{version}-cp311-cp311-manylinux_2_17_x86_64.whl"
            )
            data = hashlib.sha256(filename.encode()).digest() * 64
            metadata = f"Metadata-Version: 2.1\nName: up-proj-{i}\nVersion: {version}\n".encode()
            entries.append(UpstreamFile(filename, data, metadata if j % 2 else None))
        upstream.projects[name] = entries
        names.append(name)
    return names


def measure(url: str, paths: list[str], duration: float, work: Path, tag: str) -> dict:
    script = write_script(work / f"{tag}.lua", paths, PIP_HEADERS)
    result = warm_then_measure(url, script, duration)
    return {**summary(result), "bytes/req": result.bytes / max(result.requests, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=300)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wheelfarm-bench-proxy-"))
    upstream = FakeUpstream(mode="json")
    remote = fill_upstream(upstream, args.projects, args.files)
    data_dir = work / "data"
    fill_index(
        Settings.from_env({}, data_dir=data_dir, upstream_urls=()), args.projects, args.files, 0
    )
    local = [canonical(project_display_name(i)) for i in range(args.projects)]
    server = start_server(data_dir, work / "server.log", WHEELFARM_UPSTREAM_URL=upstream.url)
    try:
        index = f"{server.url}/{PLATFORM}/simple/"
        misses, hits = [], []
        for name in remote:
            request = urllib.request.Request(index + name + "/", headers=PIP_HEADERS)
            for times in (misses, hits):
                started = time.perf_counter()
                with urllib.request.urlopen(request) as response:
                    response.read()
                times.append(time.perf_counter() - started)
        page_fetches = [upstream.requests[f"/simple/{name}/"] for name in remote]
        merged = measure(
            server.url, [f"/{PLATFORM}/simple/{n}/" for n in remote], args.duration, work, "merged"
        )
        hosted = measure(
            server.url, [f"/{PLATFORM}/simple/{n}/" for n in local], args.duration, work, "local"
        )
        more_fetches = sum(upstream.requests[f"/simple/{n}/"] for n in remote) - len(remote)
    finally:
        stop_server(server)
        upstream.close()
    misses.sort()
    hits.sort()
    print(
        f"## upstream proxy ({args.projects} merged and {args.projects} local projects of "
        f"{args.files} files; wrk 32 connections, {args.duration:g} s)\n"
    )
    print("| page | req/s | p50 ms | p99 ms | bytes/response | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in (("local (hosted)", hosted), ("merged (cached upstream)", merged)):
        print(
            f"| {label} | {row['req/s']:,.0f} | {row['p50 ms']:.2f} | {row['p99 ms']:.2f} | "
            f"{row['bytes/req']:,.0f} | {row['errors']} |"
        )
    ratio = merged["req/s"] / hosted["req/s"]
    print(f"\nmerged/local throughput: {ratio:.2f} (target >= 0.80)")
    print(
        f"page miss: upstream page requests per project: min {min(page_fetches)}, "
        f"max {max(page_fetches)} (target 1); during the wrk runs: {more_fetches}"
    )
    print(
        f"first request (miss) median {misses[len(misses) // 2] * 1000:.1f} ms, "
        f"second (hit) median {hits[len(hits) // 2] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
