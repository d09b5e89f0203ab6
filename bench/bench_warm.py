#!/usr/bin/env python
"""``wheelfarm warm --wait`` of a requirements file, cold and warm (run by hand, not in CI).

A local upstream (tests/upstream_server.py) serves ``--packages`` test sdists: an app
needing all the others. The server proxies it; ``wheelfarm warm -r requirements.txt --wait``
runs as a CI job would (the real command, a subprocess), twice:

* cold: no stored resolution, no wheel: the resolution job runs on the worker, then every
  sdist of the closure is built;
* warm: everything cached: the stored closure is reused (no job), every wheel is on the
  platform's page.

Each cold run uses fresh project names (``--runs``), so that it is cold again.

``--worker podman`` (needs Podman and the Debian 12 base image): a real ``wheelfarm worker
--runner podman``, resolving in the platform's build container and building real
C-extension sdists (setuptools, from the upstream). ``--worker host``: the tests' in-process
worker (tests/warm_helpers.py HttpTestWorker): the real resolution code on this machine's
pip, stand-in builds (a wheel made from PKG-INFO), so the figure is warm's and the
server's overhead plus pip's resolution, without compile time.

    .venv/bin/python bench/bench_warm.py [--worker podman|host] [--packages 10] [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.worker_command import podman_worker  # noqa: E402
from tests import builder_helpers as bh  # noqa: E402
from tests.conftest import ADMIN_TOKEN, BIN, clean_client_env, start_server, stop_server  # noqa: E402
from tests.upstream_server import FakeUpstream  # noqa: E402
from tests.warm_helpers import HttpTestWorker, make_test_sdist  # noqa: E402

PLATFORM = "debian-12-py3.11-x86_64"


def api(url: str) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)  # type: ignore[no-any-return]


def make_set(dists: Path, prefix: str, packages: int, real: bool) -> list[Path]:
    """``{prefix}-app`` needing ``{prefix}-dep-1`` .. ``-dep-{packages - 1}``: sdists."""
    deps = [f"{prefix}-dep-{i}" for i in range(1, packages)]
    if not real:
        files = [make_test_sdist(dists, name, "1.0") for name in deps]
        return [*files, make_test_sdist(dists, f"{prefix}-app", "1.0", requires=deps)]
    files = [bh.make_c_extension_sdist(dists, name) for name in deps]
    package = f"{prefix}_app".replace("-", "_")
    pyproject = bh.PYPROJECT.format(name=f"{prefix}-app", version="1.0") + (
        f"dependencies = {json.dumps(deps)}\n"
    )
    app = bh.make_sdist(
        dists, f"{prefix}-app", "1.0", bh.c_extension_files(package), pyproject=pyproject
    )
    return [*files, app]


def warm(server_url: str, token: str, requirements: Path) -> tuple[float, dict]:  # type: ignore[type-arg]
    started = time.monotonic()
    done = subprocess.run(
        [
            str(BIN / "wheelfarm"),
            "warm",
            "-r",
            str(requirements),
            "--platform",
            PLATFORM,
            "--wait",
            "--timeout",
            "1800",
            "--poll-interval",
            "0.5",
            "--json",
            "--server",
            server_url,
            "--token",
            token,
        ],
        env=clean_client_env(),
        capture_output=True,
        text=True,
        timeout=2000,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"warm exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)


@contextlib.contextmanager
def running_worker(kind: str, server, tools_url: str, tmp: Path) -> Iterator[None]:  # type: ignore[no-untyped-def]
    if kind == "host":
        with HttpTestWorker(server.url, server.token("build"), [PLATFORM], tmp / "worker"):
            yield
        return
    env = {**server.env, "WHEELFARM_TOOLS_INDEX_URL": tools_url}
    process = subprocess.Popen(
        podman_worker(server.url, server.token("build"), "bench-warm", PLATFORM),
        env=env,
        stdout=(tmp / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", choices=("podman", "host"), default="podman")
    parser.add_argument("--packages", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1, help="cold runs (fresh names each)")
    parser.add_argument("--warm-runs", type=int, default=3, help="warm runs after each cold")
    args = parser.parse_args()
    real = args.worker == "podman"
    if real and (problem := bh.podman_problem()):
        raise SystemExit(problem)
    tmp = Path(tempfile.mkdtemp(prefix="wheelfarm-bench-warm-"))
    dists = tmp / "dists"
    dists.mkdir()
    upstream = FakeUpstream(mode="json")
    tools_url = ""
    if real:
        tools_url = bh.shared_local_index().url
        for wheel in sorted(bh.download_index_wheels().glob("*.whl")):
            upstream.add(wheel)  # setuptools and wheel for the builds, through the index
    sets = ["warmup", *(f"run{i}" for i in range(args.runs))]
    for prefix in sets:
        for path in make_set(
            dists, f"bw-{prefix}", 2 if prefix == "warmup" else args.packages, real
        ):
            upstream.add(path)
    server = start_server(tmp / "data", tmp / "server.log", WHEELFARM_UPSTREAM_URL=upstream.url)
    token = server.token("upload")
    rows = []
    try:
        with running_worker(args.worker, server, tools_url, tmp):
            for prefix in sets:
                requirements = tmp / f"{prefix}.txt"
                requirements.write_text(f"bw-{prefix}-app==1.0\n")
                cold, report = warm(server.url, token, requirements)
                job = api(f"{server.url}/api/builds/{report['resolution']['job_id']}")
                # "has_wheel" too: the server queues the closure's builds as the resolution
                # ends, and the worker may finish some before warm looks at the pages.
                statuses = {d["status"] for d in report["distributions"]}
                assert statuses <= {"built", "has_wheel"}, statuses
                assert report["resolution"]["reused"] is False, report["resolution"]
                warm_seconds = []
                for _ in range(args.warm_runs):
                    seconds, again = warm(server.url, token, requirements)
                    assert again["resolution"]["reused"] is True, again["resolution"]
                    assert {d["status"] for d in again["distributions"]} == {"has_wheel"}
                    warm_seconds.append(seconds)
                if prefix != "warmup":  # the warm-up pays for the build image and caches
                    rows.append(
                        (len(report["distributions"]), cold, job, statistics.median(warm_seconds))
                    )
    finally:
        stop_server(server)
        upstream.close()
    print(f"worker: {args.worker}; {args.packages} sdists per set; logs in {tmp}")
    print("| run | distributions | cold s | resolution job s (waited s) | warm s (median) |")
    print("|---|---|---|---|---|")
    for i, (count, cold, job, warm_s) in enumerate(rows):
        print(
            f"| {i} | {count} | {cold:.1f} | {job['build_seconds']:.1f} "
            f"({job['waited_seconds']:.1f}) | {warm_s:.2f} |"
        )


if __name__ == "__main__":
    main()
