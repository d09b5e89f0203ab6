"""Failure categories from build logs, with lines as compilers and pip print them."""

from __future__ import annotations

import pytest

from builder.classify import FailureCategory, classify_log, first_match

C = FailureCategory

CASES = [
    (
        "src/_ffi.c:3:10: fatal error: ffi.h: No such file or directory\ncompilation terminated.\n"
        "error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1",
        C.MISSING_SYSTEM_LIBRARY,
    ),
    ("/usr/bin/ld: cannot find -lxml2: No such file or directory", C.MISSING_SYSTEM_LIBRARY),
    (
        "Package libpq was not found in the pkg-config search path.\n"
        "Perhaps you should add the directory containing `libpq.pc'",
        C.MISSING_SYSTEM_LIBRARY,
    ),
    (
        "Error: pg_config executable not found.\n/bin/sh: 1: pg_config: not found",
        C.MISSING_SYSTEM_LIBRARY,
    ),
    (
        "src/x.c:5:1: error: expected ';' before '}' token\n"
        "error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1",
        C.COMPILER_ERROR,
    ),
    (
        "error: Command '['x86_64-linux-gnu-gcc', '-c', 'a.c']' returned non-zero exit status 1.",
        C.COMPILER_ERROR,
    ),
    ("collect2: error: ld returned 1 exit status", C.COMPILER_ERROR),
    (
        "ERROR: Could not find a version that satisfies the requirement setuptools>=61\n"
        "ERROR: No matching distribution found for setuptools>=61",
        C.NETWORK,
    ),
    (
        "WARNING: Retrying ... NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection"
        "': Failed to establish a new connection: [Errno 111] Connection refused')",
        C.NETWORK,
    ),
    (
        "ERROR: Cannot install setuptools>=61 because these package versions have conflicting "
        "dependencies.\nERROR: ResolutionImpossible: for help visit https://pip.pypa.io/",
        C.NETWORK,
    ),
    ("Traceback ...\nValueError: something in setup.py", C.OTHER),
]


@pytest.mark.parametrize(("log", "expected"), CASES)
def test_classify_log(log: str, expected: FailureCategory) -> None:
    assert classify_log(log) == expected


def test_timeout_wins_over_the_log() -> None:
    assert classify_log("fatal error: ffi.h: No such file or directory", timed_out=True) == (
        C.BUILD_TIMEOUT
    )


def test_first_match_names_the_line() -> None:
    log = "running build_ext\nsrc/a.c:3:10: fatal error: zlib.h: No such file or directory\n"
    line = first_match(log, C.MISSING_SYSTEM_LIBRARY)
    assert line == "src/a.c:3:10: fatal error: zlib.h: No such file or directory"
    assert first_match(log, C.NETWORK) is None
