"""Lock files as inputs: PEP 751 ``pylock.toml`` and uv's ``uv.lock``.

A lock file already names every distribution; what is left is choosing the ones that the
platform installs, by evaluating markers with the platform's environment.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.pylock import Pylock, PylockValidationError, is_valid_pylock_path
from packaging.utils import canonicalize_name
from packaging.version import Version

from client.warm.environment import marker_environment
from client.warm.pins import Pinned
from platforms import Platform


class LockFileError(Exception):
    """A lock file that cannot be read, or that does not fit the platform."""


def lock_kind(path: Path) -> str | None:
    """'pylock.toml' or 'uv.lock' for lock files (by name), None for requirement files."""
    if is_valid_pylock_path(path):
        return "pylock.toml"
    if path.name == "uv.lock":
        return "uv.lock"
    return None


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LockFileError(f"{path}: {exc}") from None


def read_pylock(path: Path, platform: Platform) -> list[Pinned]:
    """The packages a PEP 751 installer selects for the platform (default groups, no extras).

    Follows the spec's selection steps: Requires-Python and ``environments`` must hold;
    packages whose marker is false are left out; each selected package must be unique.
    """
    try:
        lock = Pylock.from_dict(_load(path))
    except PylockValidationError as exc:
        raise LockFileError(f"{path}: {exc}") from None
    env = marker_environment(platform)
    python = Version(env["python_full_version"])
    if lock.requires_python and not lock.requires_python.contains(python):
        raise LockFileError(
            f"{path}: requires-python {lock.requires_python} excludes Python {platform.python}"
        )
    if lock.environments is not None and not any(
        m.evaluate(env, context="requirement") for m in lock.environments
    ):
        raise LockFileError(f"{path}: none of its environments is {platform.name}")
    lock_env = {
        **env,
        "extras": frozenset(),
        "dependency_groups": frozenset(lock.default_groups or ()),
    }
    selected: dict[str, Pinned] = {}
    for package in lock.packages:
        if package.marker and not package.marker.evaluate(lock_env, context="lock_file"):  # type: ignore[arg-type]
            continue
        if package.requires_python and not package.requires_python.contains(python):
            raise LockFileError(f"{path}: {package.name} requires Python {package.requires_python}")
        if package.name in selected:
            raise LockFileError(f"{path}: {package.name} is selected more than once")
        direct = _pylock_direct(package)
        if package.version is None and direct is None:
            raise LockFileError(f"{path}: {package.name} has no version")
        selected[package.name] = Pinned(
            name=package.name,
            version=str(package.version) if package.version is not None else "",
            source="pylock.toml",
            direct=direct,
        )
    return list(selected.values())


def _pylock_direct(package: Any) -> str | None:
    if package.vcs is not None:
        return f"{package.vcs.type}+{package.vcs.url or package.vcs.path}"
    if package.directory is not None:
        return f"directory {package.directory.path}"
    if package.archive is not None:
        return package.archive.url or f"archive {package.archive.path}"
    return None


def _marker_holds(marker: str | None, env: Mapping[str, str]) -> bool:
    if not marker:
        return True
    try:
        return Marker(marker).evaluate(dict(env))
    except InvalidMarker as exc:
        raise LockFileError(f"uv.lock: invalid marker {marker!r}: {exc}") from None


_UV_ROOT_SOURCES = ("editable", "virtual")
_UV_INDEX_SOURCES = ("registry",)


def read_uv_lock(path: Path, platform: Platform) -> list[Pinned]:
    """The packages ``uv sync`` installs on the platform (every dependency group, no extras).

    uv.lock is universal: packages carry no markers of their own; the dependency edges do.
    Starting from the workspace members (editable or virtual sources), follow the edges whose
    marker holds for the platform, taking optional dependencies an edge asks for with
    ``extra``. Members are not distributions to build; packages from a registry are, others
    (git, url, path, directory) are reported as direct.
    """
    data = _load(path)
    packages = data.get("package", [])
    if not isinstance(packages, list):
        raise LockFileError(f"{path}: [[package]] must be an array of tables")
    env = marker_environment(platform)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for package in packages:
        by_name.setdefault(canonicalize_name(str(package.get("name", ""))), []).append(package)

    def source_kind(package: Mapping[str, Any]) -> str:
        source = package.get("source", {})
        return next(iter(source), "registry") if isinstance(source, dict) else "registry"

    def targets(edge: Mapping[str, Any]) -> list[dict[str, Any]]:
        found = by_name.get(canonicalize_name(str(edge.get("name", ""))), [])
        if "version" in edge:
            found = [p for p in found if p.get("version") == edge["version"]]
        if "source" in edge:
            found = [p for p in found if p.get("source") == edge["source"]]
        if len(found) > 1:  # a forked resolution: the package's resolution-markers decide
            found = [
                p
                for p in found
                if any(_marker_holds(m, env) for m in p.get("resolution-markers", [""]))
            ]
        return found

    roots = [p for p in packages if source_kind(p) in _UV_ROOT_SOURCES]
    todo: list[tuple[dict[str, Any], frozenset[str], bool]] = [
        (p, frozenset(), True) for p in (roots or packages)
    ]
    seen: set[tuple[int, frozenset[str]]] = set()
    chosen: dict[int, dict[str, Any]] = {}
    while todo:
        package, extras, is_root = todo.pop()
        key = (id(package), extras)
        if key in seen:
            continue
        seen.add(key)
        chosen[id(package)] = package
        edges: list[Mapping[str, Any]] = list(package.get("dependencies", []))
        optional = package.get("optional-dependencies", {})
        for extra in extras:
            edges += optional.get(extra, [])
        if is_root:
            for group in package.get("dev-dependencies", {}).values():
                edges += group
        for edge in edges:
            if not _marker_holds(edge.get("marker"), env):
                continue
            wanted = frozenset(canonicalize_name(e) for e in edge.get("extra", []))
            for target in targets(edge):
                todo.append((target, wanted, False))
    result = []
    for package in chosen.values():
        kind = source_kind(package)
        if roots and kind in _UV_ROOT_SOURCES:
            continue
        source = package.get("source", {})
        direct = None if kind in _UV_INDEX_SOURCES else f"{kind} {source.get(kind, '')}"
        result.append(
            Pinned(
                name=canonicalize_name(str(package["name"])),
                version=str(package.get("version", "")),
                source="uv.lock",
                direct=direct,
            )
        )
    return sorted(result, key=lambda p: (p.name, p.version))


def read_lock(path: Path, platform: Platform) -> list[Pinned]:
    kind = lock_kind(path)
    if kind == "pylock.toml":
        return read_pylock(path, platform)
    if kind == "uv.lock":
        return read_uv_lock(path, platform)
    raise LockFileError(f"{path}: not a lock file")


def merge(groups: Iterable[list[Pinned]]) -> list[Pinned]:
    """One entry per (name, version), in first-seen order."""
    merged: dict[tuple[str, str], Pinned] = {}
    for group in groups:
        for pinned in group:
            merged.setdefault((pinned.name, pinned.version), pinned)
    return list(merged.values())
