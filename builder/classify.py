"""Why a build failed, from its log: a small, fixed set of categories.

The categories tell an operator what to do next: add an OS package to the project's build
settings (``missing_system_library``), raise the time limit (``build_timeout``) or the memory
and process limits (``resource_limit``), look at the index (``network``: unreachable, or it
cannot give the build dependencies), or read the log (``compiler_error``, ``import_failed``,
``other``).
"""

from __future__ import annotations

import json
import re
from enum import StrEnum

from builder.container_entry import LIMITS_MARKER


class FailureCategory(StrEnum):
    MISSING_SYSTEM_LIBRARY = "missing_system_library"
    COMPILER_ERROR = "compiler_error"
    BUILD_TIMEOUT = "build_timeout"
    RESOURCE_LIMIT = "resource_limit"  # the memory or process limit (builder.container_entry)
    IMPORT_FAILED = "import_failed"
    NETWORK = "network"
    OTHER = "other"


# Checked in this order: a missing header also makes the compiler fail, so the more
# specific categories come first.
PATTERNS: tuple[tuple[FailureCategory, tuple[str, ...]], ...] = (
    (
        FailureCategory.MISSING_SYSTEM_LIBRARY,
        (
            r"fatal error: [^\n:]+\.(h|hh|hpp|hxx)(\"|')?: No such file or directory",
            r"\bcannot find -l\S+",
            r"Package '?[\w.+-]+'? was not found in the pkg-config search path",
            r"No package '[\w.+-]+' found",
            r"error while loading shared libraries: \S+: cannot open shared object file",
            r"Could NOT find \w+ \(missing:",  # CMake find_package
            r"\b(library|header) ['\"]?[\w.+-]+['\"]? (was )?not found",
            r"(?i)\b[\w-]+[_-]config(:| executable)? (command )?not found",  # pg_config
        ),
    ),
    (
        FailureCategory.NETWORK,
        (
            # Build dependencies the index cannot give (missing, or conflicting pins).
            r"No matching distribution found for",
            r"ResolutionImpossible",
            r"Could not find a version that satisfies the requirement",
            r"Failed to establish a new connection",
            r"Temporary failure in name resolution",
            r"Name or service not known",
            r"Connection (refused|reset by peer)",
            r"Read timed out",
            r"ReadTimeoutError|ConnectTimeoutError|NewConnectionError",
            r"SSLError|CERTIFICATE_VERIFY_FAILED",
            r"HTTP error (40[34]|5\d\d) while getting",
        ),
    ),
    (
        FailureCategory.COMPILER_ERROR,
        (
            r"error: command '[^']*(gcc|g\+\+|cc|c\+\+|clang|clang\+\+|gfortran)' failed",
            r"error: Command '\['[^']*(gcc|g\+\+|cc|c\+\+|clang)'.*returned non-zero exit",
            r"\.(c|cc|cpp|cxx|h|hpp|pyx|f90|f)[:(]\d+[:,]?\d*\)?:? (fatal )?error\b",
            r"\berror: linker `cc` not found|error\[E\d{4}\]",  # Rust
            r"collect2: error: ld returned",
            r"Error compiling Cython file",
        ),
    ),
)
_COMPILED = tuple(
    (category, tuple(re.compile(p) for p in patterns)) for category, patterns in PATTERNS
)


def classify_log(log: str, *, timed_out: bool = False) -> FailureCategory:
    """The category of a failed build, from its log text."""
    if timed_out:
        return FailureCategory.BUILD_TIMEOUT
    if any(limits_hit(log).values()):
        return FailureCategory.RESOURCE_LIMIT
    for category, patterns in _COMPILED:
        if any(p.search(log) for p in patterns):
            return category
    return FailureCategory.OTHER


def first_match(log: str, category: FailureCategory) -> str | None:
    """The log line that made ``category`` match, for a short failure summary."""
    for cat, patterns in _COMPILED:
        if cat != category:
            continue
        for line in log.splitlines():
            if any(p.search(line) for p in patterns):
                return line.strip()
    return None


def limits_hit(log: str) -> dict[str, int]:
    """How often a build hit each container limit ("memory", "pids"), as its entry said."""
    for line in reversed(log.splitlines()):
        if line.startswith(LIMITS_MARKER):
            try:
                found = json.loads(line[len(LIMITS_MARKER) :])
            except ValueError:
                return {}
            if isinstance(found, dict):
                return {k: v for k, v in found.items() if isinstance(v, int)}
    return {}
