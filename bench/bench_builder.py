"""Benchmark: a small C-extension sdist built in a fresh Podman container vs on the host.

    .venv/bin/python bench/bench_builder.py [--runs 5] [--json bench/results/builder.json]
        [--platform NAME ...]

Both sides build the same sdist with ``pip wheel --no-deps`` against the same local Simple
index on loopback (setuptools and wheel come from it), so the difference is the container:
start-up, mounts, a read-only root and the cgroup limits. Reported per side: median and min
wall-clock seconds; the ratio is container build step / host build (target <= 1.3). The whole
pipeline (build + inspect + import check, three containers) is reported alongside.

With ``--platform`` (repeatable) the same sdist is built for each platform named, e.g. the
native Debian 12 x86_64 and the emulated Debian 12 aarch64 (qemu-user-static): the report
gives each platform's build step and pipeline, and each build step over the first one's.
The host's own pip is measured only for a platform this machine is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder.build import build_wheel  # noqa: E402
from builder.images import ToolsIndex, ensure_image  # noqa: E402
from builder.runners import host_mismatches  # noqa: E402
from platforms import Platform, load_platforms  # noqa: E402
from tests.builder_helpers import (  # noqa: E402
    make_c_extension_sdist,
    podman_problem,
    shared_local_index,
)

PLATFORM = "debian-12-py3.11-x86_64"


def host_build(sdist: Path, index_url: str, out: Path) -> float:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(out.parent),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }
    start = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--index-url",
            index_url,
            "--wheel-dir",
            str(out),
            str(sdist),
        ],
        env=env,
        check=True,
    )
    return time.monotonic() - start


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3)}


def bench_platform(platform: Platform, index_url: str, runs: int, work: Path) -> dict | None:  # type: ignore[type-arg]
    """One platform's numbers; the host's own pip alongside when this machine is it."""
    start = time.monotonic()
    ensure_image(platform, tools_index=ToolsIndex(index_url))
    image_seconds = time.monotonic() - start
    native = not host_mismatches(platform)
    host: list[float] = []
    container_build: list[float] = []
    container_total: list[float] = []
    work.mkdir()
    sdist = make_c_extension_sdist(work, name="wf-bench-cext")
    # One warm-up of each, not counted (page cache, first pyc compile on the host).
    if native:
        host_build(sdist, index_url, work / "warm-host")
    build_wheel(platform, sdist, index_url, work / "warm-container")
    for i in range(runs):
        # Alternate the two sides so drift on the machine affects both alike.
        if native:
            host.append(host_build(sdist, index_url, work / f"host-{i}"))
        result = build_wheel(platform, sdist, index_url, work / f"container-{i}")
        if not result.ok:
            print(result.log[-3000:], file=sys.stderr)
            return None
        container_build.append(result.timings["build"])
        container_total.append(result.timings["total"])
    report: dict[str, object] = {
        "platform": platform.name,
        "emulated": platform.emulated,
        "runs": runs,
        "image_ready_seconds": round(image_seconds, 3),
        "container_build_step": stats(container_build),
        "container_pipeline_build_inspect_import": stats(container_total),
    }
    if native:
        report["host_pip_wheel"] = stats(host)
        report["ratio_build_step_median"] = round(
            statistics.median(container_build) / statistics.median(host), 3
        )
        report["ratio_pipeline_median"] = round(
            statistics.median(container_total) / statistics.median(host), 3
        )
        report["target_ratio"] = 1.3
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=REPO / "bench/results/builder.json")
    parser.add_argument(
        "--platform",
        action="append",
        dest="platforms",
        help=f"platform to build for (repeatable; default {PLATFORM}); an emulated one "
        "(e.g. debian-12-py3.11-aarch64) runs under qemu-user-static",
    )
    args = parser.parse_args()
    if problem := podman_problem():
        print(f"cannot benchmark: {problem}", file=sys.stderr)
        return 2
    known = load_platforms()
    chosen = [known[name] for name in args.platforms or [PLATFORM]]
    index = shared_local_index()
    reports = []
    with tempfile.TemporaryDirectory(prefix="wheelfarm-bench-") as tmp:
        for platform in chosen:
            found = bench_platform(platform, index.url, args.runs, Path(tmp) / platform.name)
            if found is None:
                return 1
            reports.append(found)
    report: dict[str, object] = reports[0] if len(reports) == 1 else {"platforms": reports}
    if len(reports) > 1:
        # Each platform's build step against the first (native) one's: the emulation cost.
        first = reports[0]["container_build_step"]["median"]  # type: ignore[index]
        report["build_step_median_vs_first"] = {
            r["platform"]: round(r["container_build_step"]["median"] / first, 2)  # type: ignore[index]
            for r in reports
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
