"""The clients of the CI storm: wrk with a Lua script that walks a pip resolve.

For each package of the set, in order: the project page with pip's headers, the wheel's
``.metadata`` (PEP 658), the wheel (no Range, ``Accept-Encoding: identity``): 3 requests a
package, one full resolve and download every 3 x packages requests.

wrk's Lua API has no per-connection state: ``request()`` is called per wrk thread, for
whichever of its connections is ready. So each wrk thread walks the sequence (the threads
start at different packages) and its connections take the next request in turn. The mix of
requests and the concurrency are those of N clients each walking the set; what differs is
only which socket carries which request.

Every response whose status is not 200 or 304 is counted (with its status) by the script's
``response()``: wrk itself counts only statuses >= 400. That costs wrk CPU: with a
``response()`` wrk hands every body to Lua (two copies of each wheel), about 200 us of wrk
CPU a request more on this set. ``count_statuses=False`` leaves it out (wrk's own count of
statuses >= 400 only; see --status-count in bench_load.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from load_set import DOWNLOAD_HEADERS, PAGE_HEADERS, StormTarget
from wrkrun import WRKJSON_LUA, WrkResult, run_wrk

STORM_LUA = (
    r"""
local paths = {%(paths)s}
local is_page = {%(is_page)s}
local page_headers = %(page_headers)s
local download_headers = %(download_headers)s
local stride = %(stride)d
local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_no", thread_count)
  table.insert(threads, thread)
end

local prepared = {}
local next_index = 1
unexpected = 0
statuses = {}

function init(args)
  for i, path in ipairs(paths) do
    local headers = is_page[i] and page_headers or download_headers
    prepared[i] = wrk.format("GET", path, headers)
  end
  next_index = ((thread_no or 1) - 1) * stride %% #paths + 1
end

function request()
  local i = next_index
  next_index = next_index %% #paths + 1
  return prepared[i]
end

%(response)s

%(delay)s

function done(summary, latency, requests)
  local counted = ""
  if response then  -- statuses counted by the script: other than 200/304, by status
    local bad = 0
    local merged = {}
    for _, thread in ipairs(threads) do
      bad = bad + thread:get("unexpected")
      for key, n in pairs(thread:get("statuses")) do
        merged[key] = (merged[key] or 0) + n
      end
    end
    local counts = {}
    for key, n in pairs(merged) do
      table.insert(counts, string.format('"%%s":%%d', key, n))
    end
    counted = string.format(',"unexpected_status":%%d,"status_counts":{%%s}',
      bad, table.concat(counts, ","))
  end
"""
    + WRKJSON_LUA
)


def _lua_table(headers: dict[str, str]) -> str:
    # A JSON string literal is a valid Lua string literal for these ASCII values.
    return "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()) + "}"


def storm_paths(targets: list[StormTarget]) -> list[tuple[str, bool]]:
    """(path, is a page) in pip's order: page, .metadata, wheel of each package."""
    paths = []
    for target in targets:
        paths += [(target.page, True), (target.metadata, False), (target.wheel, False)]
    return paths


RESPONSE_LUA = r"""
function response(status, headers, body)
  if status ~= 200 and status ~= 304 then
    unexpected = unexpected + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  end
end
"""


def write_storm_script(
    path: Path,
    targets: list[StormTarget],
    wrk_threads: int,
    count_statuses: bool = True,
    think_ms: int = 0,
) -> Path:
    paths = storm_paths(targets)
    stride = 3 * max(1, len(targets) // max(1, wrk_threads))  # whole packages apart
    text = STORM_LUA % {
        "paths": ",".join(json.dumps(p) for p, _ in paths),
        "is_page": ",".join("true" if page else "false" for _, page in paths),
        "page_headers": _lua_table(PAGE_HEADERS),
        "download_headers": _lua_table(DOWNLOAD_HEADERS),
        "stride": stride,
        "response": RESPONSE_LUA if count_statuses else "",
        "delay": f"function delay()\n  return {think_ms}\nend" if think_ms > 0 else "",
    }
    path.write_text(text)
    return path


def bytes_per_resolve(targets: list[StormTarget]) -> int:
    """Bytes of the files alone (pages vary with compression): a lower bound per resolve."""
    return sum(t.wheel_bytes + t.metadata_bytes for t in targets)


def run_storm(
    url: str, script: Path, seconds: float, connections: int, wrk_threads: int
) -> WrkResult:
    result, _ = run_wrk(url, script, seconds, connections, wrk_threads, timeout=10)
    return result


def breakdown_cases(targets: list[StormTarget]) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, paths, headers) for each kind of request alone, hosted and upstream apart."""
    kinds: tuple[tuple[str, Callable[[StormTarget], str], dict[str, str]], ...] = (
        ("page", lambda t: t.page, PAGE_HEADERS),
        ("metadata", lambda t: t.metadata, DOWNLOAD_HEADERS),
        ("wheel", lambda t: t.wheel, DOWNLOAD_HEADERS),
    )
    cases = []
    for kind, pick, headers in kinds:
        for where, hosted in (("hosted", True), ("upstream", False)):
            paths = [pick(t) for t in targets if t.package.hosted == hosted]
            if paths:
                cases.append((f"{kind}, {where}", paths, headers))
    return cases
