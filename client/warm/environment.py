"""A platform's environment markers (PEP 508), as its pip would see them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from platforms import Platform, parse_platform


def platform_from_json(data: Mapping[str, Any]) -> Platform:
    """A Platform from the server's /api/platforms entry (the same fields as the TOML)."""
    return parse_platform(data, source=f"server platform {data.get('name')!r}")


def marker_environment(platform: Platform) -> dict[str, str]:
    """Every PEP 508 marker variable for CPython on this Linux platform.

    A platform definition names CPython's minor version only, so ``python_full_version`` is
    X.Y.0. ``platform_release`` and ``platform_version`` describe whatever kernel a build
    runs on, which the platform does not fix: they are empty.
    """
    full = f"{platform.python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": platform.arch,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": full,
        "python_version": platform.python,
        "sys_platform": "linux",
    }
