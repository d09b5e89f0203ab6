"""What a Simple API page says, independent of its format and of where files come from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SimpleFile:
    filename: str
    url: str  # relative to the project page, or absolute
    hashes: Mapping[str, str]
    requires_python: str | None = None
    yanked: bool | str = False  # a string is the reason
    core_metadata: Mapping[str, str] | bool = False  # hashes of the .metadata file, or bool
    size: int | None = None
    upload_time: str | None = None  # YYYY-MM-DDThh:mm:ss.ffffffZ


@dataclass(frozen=True)
class ProjectPage:
    name: str  # display name
    files: tuple[SimpleFile, ...]
    versions: tuple[str, ...]
    tracks: tuple[str, ...] = field(default=())  # PEP 708


@dataclass(frozen=True)
class ProjectList:
    names: tuple[str, ...]  # display names
