"""Benchmark: a small C-extension sdist built in a fresh Podman container vs on the host.

    .venv/bin/python bench/bench_builder.py [--runs 5] [--json bench/results/builder.json]

Both sides build the same sdist with ``pip wheel --no-deps`` against the same local Simple
index on loopback (setuptools and wheel come from it), so the difference is the container:
start-up, mounts, a read-only root and the cgroup limits. Reported per side: median and min
wall-clock seconds; the ratio is container build step / host build (target <= 1.3). The whole
pipeline (build + inspect + import check, three containers) is reported alongside.
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
from platforms import load_platforms  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=REPO / "bench/results/builder.json")
    args = parser.parse_args()
    if problem := podman_problem():
        print(f"cannot benchmark: {problem}", file=sys.stderr)
        return 2
    platform = load_platforms()[PLATFORM]
    index = shared_local_index()
    start = time.monotonic()
    ensure_image(platform, tools_index=ToolsIndex(index.url))
    image_seconds = time.monotonic() - start

    host: list[float] = []
    container_build: list[float] = []
    container_total: list[float] = []
    with tempfile.TemporaryDirectory(prefix="wheelfarm-bench-") as tmp:
        work = Path(tmp)
        sdist = make_c_extension_sdist(work, name="wf-bench-cext")
        # One warm-up of each, not counted (page cache, first pyc compile on the host).
        host_build(sdist, index.url, work / "warm-host")
        build_wheel(platform, sdist, index.url, work / "warm-container")
        for i in range(args.runs):
            # Alternate the two sides so drift on the machine affects both alike.
            host.append(host_build(sdist, index.url, work / f"host-{i}"))
            result = build_wheel(platform, sdist, index.url, work / f"container-{i}")
            if not result.ok:
                print(result.log[-3000:], file=sys.stderr)
                return 1
            container_build.append(result.timings["build"])
            container_total.append(result.timings["total"])

    def stats(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3)}

    report = {
        "platform": PLATFORM,
        "runs": args.runs,
        "image_ready_seconds": round(image_seconds, 3),
        "host_pip_wheel": stats(host),
        "container_build_step": stats(container_build),
        "container_pipeline_build_inspect_import": stats(container_total),
        "ratio_build_step_median": round(
            statistics.median(container_build) / statistics.median(host), 3
        ),
        "ratio_pipeline_median": round(
            statistics.median(container_total) / statistics.median(host), 3
        ),
        "target_ratio": 1.3,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
