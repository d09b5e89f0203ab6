#!/usr/bin/env python
"""Builder farm throughput: a queue of small C-extension sdists built by one worker, then
by two (run by hand, not in CI; needs Podman and the Debian 12 base image, see .ci/setup.d).

A local upstream serves the sdists and their build dependencies; the server proxies it;
``wheelfarm worker --runner podman`` builds every job (build, inspect and import containers).
Target on the 2-core machine: two workers at least 1.7 times as fast as one.

    .venv/bin/python bench/bench_farm.py [--packages 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.worker_command import podman_worker  # noqa: E402
from tests import builder_helpers as bh  # noqa: E402
from tests.conftest import ADMIN_TOKEN, start_server, stop_server  # noqa: E402
from tests.upstream_server import FakeUpstream  # noqa: E402

PLATFORM = "debian-12-py3.11-x86_64"


def api(url: str, method: str = "GET", body: object | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)  # type: ignore[no-any-return]


def run_queue(
    server_url: str, env: dict[str, str], token: str, names: list[str], workers: int, logs: Path
) -> float:
    """Seconds from the first claim to the last finished job, with ``workers`` workers."""
    ids = []
    for name in names:
        body = {"project": name, "version": "1.0", "platforms": [PLATFORM]}
        ids.append(api(f"{server_url}/api/builds", "POST", body)["requests"][0]["job_id"])
    processes = [
        subprocess.Popen(
            podman_worker(server_url, token, f"bench-{workers}-{i}", PLATFORM),
            env=env,
            stdout=(logs / f"worker-{workers}-{i}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for i in range(workers)
    ]
    started = time.monotonic()
    try:
        while True:
            states = [api(f"{server_url}/api/builds/{i}")["state"] for i in ids]
            if all(s in ("succeeded", "failed") for s in states):
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(60)
    failed = [n for n, s in zip(names, states, strict=True) if s != "succeeded"]
    if failed:
        raise SystemExit(f"builds failed: {failed}; see {logs}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=20)
    args = parser.parse_args()
    problem = bh.podman_problem()
    if problem:
        raise SystemExit(problem)
    tmp = Path(tempfile.mkdtemp(prefix="wheelfarm-bench-farm-"))
    tools = bh.shared_local_index()
    upstream = FakeUpstream()
    for wheel in sorted(bh.download_index_wheels().glob("*.whl")):
        upstream.add(wheel)
    dists = tmp / "dists"
    dists.mkdir()
    names: dict[int, list[str]] = {1: [], 2: []}
    for workers in (1, 2):
        for i in range(args.packages):
            name = f"bench-cext-{workers}w-{i}"
            upstream.add(bh.make_c_extension_sdist(dists, name))
            names[workers].append(name)
    server = start_server(tmp / "data", tmp / "server.log", WHEELFARM_UPSTREAM_URL=upstream.url)
    env = {**server.env, "WHEELFARM_TOOLS_INDEX_URL": tools.url}
    token = server.token("build")
    try:
        # Warm-up: the build image and the page/file caches of the build dependencies.
        upstream.add(bh.make_c_extension_sdist(dists, "bench-warmup"))
        run_queue(server.url, env, token, ["bench-warmup"], 1, tmp)
        one = run_queue(server.url, env, token, names[1], 1, tmp)
        two = run_queue(server.url, env, token, names[2], 2, tmp)
    finally:
        stop_server(server)
        upstream.close()
    n = args.packages
    print("| workers | packages | seconds | packages/min |")
    print("|---|---|---|---|")
    print(f"| 1 | {n} | {one:.1f} | {n / one * 60:.1f} |")
    print(f"| 2 | {n} | {two:.1f} | {n / two * 60:.1f} |")
    print(f"speed-up of two workers over one: {one / two:.2f} (target >= 1.7)")


if __name__ == "__main__":
    main()
