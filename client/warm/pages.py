"""What a platform's PEP 691 project page offers: files by version, wheels, pip's choice."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from platforms import Platform


@dataclass(frozen=True)
class IndexFile:
    filename: str
    version: Version
    is_wheel: bool
    yanked: bool
    requires_python: str | None

    def installs_on(self, platform: Platform) -> bool:
        """A wheel whose tags the platform accepts, or an sdist (which it can build)."""
        return platform.accepts_wheel(self.filename) if self.is_wheel else True

    def python_ok(self, platform: Platform) -> bool:
        """Requires-Python against the platform's X.Y, as pip's ``--python-version`` does."""
        if not self.requires_python:
            return True
        try:
            spec = SpecifierSet(self.requires_python)
        except InvalidSpecifier:
            return True  # pip ignores a malformed Requires-Python too
        return spec.contains(Version(platform.python), prereleases=True)


def page_files(page: Mapping[str, Any]) -> list[IndexFile]:
    """The distributions on a PEP 691 page; files whose names do not parse are left out."""
    found = []
    for entry in page.get("files", []):
        filename = str(entry.get("filename", ""))
        try:
            if filename.endswith(".whl"):
                version = parse_wheel_filename(filename)[1]
                is_wheel = True
            else:
                version = parse_sdist_filename(filename)[1]
                is_wheel = False
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        yanked = entry.get("yanked", False)
        found.append(
            IndexFile(
                filename=filename,
                version=version,
                is_wheel=is_wheel,
                yanked=yanked is not False,
                requires_python=entry.get("requires-python"),
            )
        )
    return found


def wheels_for(files: Iterable[IndexFile], version: str, platform: Platform) -> list[str]:
    """The wheels of this version that the platform installs (yanked ones too: pinned)."""
    wanted = Version(version)
    return [
        f.filename
        for f in files
        if f.is_wheel and f.version == wanted and platform.accepts_wheel(f.filename)
    ]


def _pinned(specifier: SpecifierSet) -> bool:
    """pip's rule for when a yanked release may be chosen: an exact, wildcard-free pin."""
    return any(
        s.operator == "===" or (s.operator == "==" and not s.version.endswith(".*"))
        for s in specifier
    )


def matching_versions(
    files: Iterable[IndexFile],
    requirement: Requirement,
    platform: Platform,
    *,
    pre: bool = False,
) -> list[Version]:
    """Versions the platform's pip could pick for the requirement, newest first.

    As pip does: only files that install on the platform and whose Requires-Python admits
    its Python; the specifier filters versions with the pre-release rule of
    ``SpecifierSet.filter`` (pre-releases only if asked for, named in the specifier, or if
    nothing else matches); yanked files count only when every match is yanked and the
    requirement pins one version (PEP 592).
    """
    usable = [f for f in files if f.installs_on(platform) and f.python_ok(platform)]
    allowed = set(
        requirement.specifier.filter({f.version for f in usable}, prereleases=pre or None)
    )
    applicable = [f for f in usable if f.version in allowed]
    if not (applicable and all(f.yanked for f in applicable) and _pinned(requirement.specifier)):
        applicable = [f for f in applicable if not f.yanked]
    return sorted({f.version for f in applicable}, reverse=True)
