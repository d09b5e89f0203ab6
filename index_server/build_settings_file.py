"""Per-project build settings from a TOML file, applied at server start.

    [pyyaml]                       # the project, any spelling
    constraints = "cython<3"       # build constraints (PIP_BUILD_CONSTRAINT)
    env = { CFLAGS = "-O2" }
    os_packages = ["libyaml-dev"]  # installed in the build image for this project
    build_command = "..."          # instead of `pip wheel`

The file wins over earlier API changes for the projects it names; others are untouched.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name

from builder import protocol
from index_server import jobs
from index_server.services import Services


class SettingsFileError(ValueError):
    pass


def read_settings_file(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsFileError(f"{path}: {exc}") from None
    found = {}
    for project, table in data.items():
        try:
            found[canonicalize_name(project)] = protocol.validate(table, protocol.BUILD_SETTINGS)
        except protocol.ProtocolError as exc:
            raise SettingsFileError(f"{path}: [{project}] {exc}") from None
    return found


def apply_settings_file(services: Services, path: Path) -> list[str]:
    """Store the file's settings; returns the projects it set."""
    settings = read_settings_file(path)
    for project, values in settings.items():
        jobs.set_project_settings(services, project, values, f"file:{path.name}")
    return sorted(settings)
