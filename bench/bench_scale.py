#!/usr/bin/env python
"""Scale (run by hand, not in CI): the same project page on an index of 1,000 projects and on
one of 100,000 projects and 1,000,000 files; server memory; 1 against 2 server processes.

    .venv/bin/python bench/bench_scale.py [--large 100000] [--small 1000] [--files 10]

Targets on the 2-core machine: the page's latency on the large index within 20% of the
small one's; every server process under 300 MB; throughput growing from 1 to 2 processes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_index import child_pids, start_server, stop_server  # noqa: E402
from fill import PLATFORM, canonical, fill_index, project_display_name  # noqa: E402
from wrkrun import PIP_HEADERS, summary, warm_then_measure, write_script  # noqa: E402

from index_server.config import Settings  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(data_dir: Path, workers: int, paths: list[str], duration: float, work: Path) -> dict:
    server = start_server(data_dir, workers, 4, work)
    try:
        script = write_script(work / f"s-{workers}-{len(paths)}.lua", paths, PIP_HEADERS)
        result = warm_then_measure(server.url, script, duration)
        memory = [rss_mb(pid) for pid in child_pids(server.process.pid)]
    finally:
        stop_server(server)
    return {**summary(result), "rss": max(memory) if memory else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse filled indexes")
    args = parser.parse_args()
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="wheelfarm-bench-scale-"))
    work = Path(tempfile.mkdtemp(prefix="wheelfarm-bench-scale-work-"))
    sizes = {"small": args.small, "large": args.large}
    for label, n in sizes.items():
        data_dir = root / label
        if not (data_dir / "wheelfarm.sqlite3").exists():
            started = time.perf_counter()
            fill_index(Settings.from_env({}, data_dir=data_dir, upstream_urls=()), n, args.files, 0)
            print(
                f"filled {label}: {n:,} projects, {n * args.files:,} files "
                f"in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    page = [f"/{PLATFORM}/simple/{canonical(project_display_name(7))}/"]
    spread = [
        f"/{PLATFORM}/simple/{canonical(project_display_name(i))}/"
        for i in range(0, args.small, max(1, args.small // 1000))
    ]
    rows = []
    for label in sizes:
        for workers in (1, 2):
            for what, paths in (("one page", page), ("1,000 pages", spread)):
                result = measure(root / label, workers, paths, args.duration, work)
                rows.append((label, workers, what, result))
                print(
                    f"  {label} {workers}x4 {what}: {result['req/s']:,.0f} req/s "
                    f"p50 {result['p50 ms']:.2f} ms p99 {result['p99 ms']:.2f} ms "
                    f"rss {result['rss']:.0f} MB",
                    flush=True,
                )
    print(f"\n## scale ({args.files} files per project; wrk 32 connections, {args.duration:g} s)\n")
    print("| index | processes | pages | req/s | p50 ms | p99 ms | errors | max RSS MB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for label, workers, what, r in rows:
        files = sizes[label] * args.files
        print(
            f"| {sizes[label]:,} projects / {files:,} files | {workers} | {what} | "
            f"{r['req/s']:,.0f} | {r['p50 ms']:.2f} | {r['p99 ms']:.2f} | {r['errors']} | "
            f"{r['rss']:.0f} |"
        )

    def find(label: str, workers: int, what: str) -> dict:
        return next(r for lb, w, wh, r in rows if (lb, w, wh) == (label, workers, what))

    small, large = find("small", 2, "one page"), find("large", 2, "one page")
    print(
        f"\nlarge/small p50 latency, one page: {large['p50'] / small['p50']:.2f} "
        f"(target <= 1.20); req/s ratio {large['req/s'] / small['req/s']:.2f}"
    )
    one, two = find("large", 1, "1,000 pages"), find("large", 2, "1,000 pages")
    print(f"1 -> 2 server processes, large index: {two['req/s'] / one['req/s']:.2f}x")
    print(f"max RSS of a server process: {max(r['rss'] for *_, r in rows):.0f} MB (target < 300)")


if __name__ == "__main__":
    main()
