"""Running wrk with a generated Lua script, and reading its results back as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

# What pip asks for an index page (pip's collector, plus requests' Accept-Encoding): the
# headers every bench's page requests send (bench_load adds pip's User-Agent and
# Cache-Control, bench_index the Cache-Control).
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
PIP_HEADERS = {"Accept": PIP_ACCEPT, "Accept-Encoding": "gzip, deflate"}

# The end of every script's done(): one JSON line of wrk's summary, plus the fields in
# ``counted`` (a string of ``,"key":value`` pairs, or "").
WRKJSON_LUA = r"""  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect_errors":%%d,' ..
    '"read_errors":%%d,"write_errors":%%d,"status_errors":%%d,"timeout_errors":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%.1f%%s}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, counted))
end
"""

# Chooses a path (and its If-None-Match, when given) per request: random, or in turn for
# warm-ups. Prints one JSON line at the end, so nothing depends on wrk's text layout.
LUA_TEMPLATE = (
    r"""
local paths = {%(paths)s}
local etags = %(etags)s
local sequential = %(sequential)s
wrk.method = "GET"
%(headers)s
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_no", thread_count)
end
local next_index = 1
function init(args)
  local no = thread_no or 1
  math.randomseed(os.time() * 1000 + no)
  next_index = (no * 7919) %% #paths + 1
end
function request()
  local i
  if sequential then
    i = next_index
    next_index = next_index %% #paths + 1
  else
    i = math.random(#paths)
  end
  if etags then
    wrk.headers["If-None-Match"] = etags[i]
  end
  return wrk.format(nil, paths[i], wrk.headers)
end
function done(summary, latency, requests)
  local counted = ""
"""
    + WRKJSON_LUA
)


@dataclass
class WrkResult:
    requests: int
    duration_us: int
    bytes: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int
    timeout_errors: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    mean_us: float
    # Filled only by scripts that count statuses themselves (a Lua ``response()``, see
    # bench/load_storm.py): responses whose status was not an expected one, by status.
    # When set, it replaces wrk's own status_errors (HTTP >= 400 only) in ``errors``.
    unexpected_status: int | None = None
    status_counts: dict[str, int] | None = None

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def errors(self) -> int:
        bad_status = (
            self.status_errors if self.unexpected_status is None else self.unexpected_status
        )
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + bad_status
            + self.timeout_errors
        )

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "rps": round(self.rps, 1),
            "p50_ms": self.p50_us / 1000,
            "p99_ms": self.p99_us / 1000,
        }


def find_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "wrk is not installed: apt-get install wrk (Debian package), then run again"
        )
    return found


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def write_script(
    path: Path,
    paths: list[str],
    headers: dict[str, str],
    etags: list[str] | None = None,
    sequential: bool = False,
) -> Path:
    header_lines = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()
    )
    text = LUA_TEMPLATE % {
        "paths": ",".join(_lua_string(p) for p in paths),
        "etags": "{" + ",".join(_lua_string(e) for e in etags) + "}" if etags else "nil",
        "sequential": "true" if sequential else "false",
        "headers": header_lines,
    }
    path.write_text(text)
    return path


def run_wrk(
    base_url: str,
    script: Path,
    duration: float,
    connections: int,
    threads: int,
    timeout: float = 10.0,
) -> tuple[WrkResult, str]:
    """Run wrk once; (parsed result, wrk's own text output)."""
    command = [
        find_wrk(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s",
        "--latency",
        f"--script={script}",
        base_url + "/",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + timeout + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return WrkResult(**json.loads(line.removeprefix("WRKJSON "))), done.stdout
    raise RuntimeError(f"no result line in wrk's output:\n{done.stdout}\n{done.stderr}")


def warm_then_measure(
    base_url: str, script: Path, duration: float, connections: int = 32, threads: int = 2
) -> WrkResult:
    """A 2 s run that warms every worker's page cache, then the measured run."""
    run_wrk(base_url, script, 2, connections, threads)
    result, _ = run_wrk(base_url, script, duration, connections, threads)
    return result


def summary(result: WrkResult) -> dict[str, float]:
    """The numbers the small benches print: req/s, p50 and p99 in ms, errors."""
    return {
        "req/s": result.rps,
        "p50 ms": result.p50_us / 1000,
        "p99 ms": result.p99_us / 1000,
        "errors": result.errors,
    }
