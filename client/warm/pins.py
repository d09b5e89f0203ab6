"""One distribution of a closure: what a platform installs, from a lock file or a resolution."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pinned:
    name: str  # canonical
    version: str
    source: str  # "resolution", "pylock.toml", "uv.lock"
    filename: str | None = None  # the file the resolver chose, if it says
    direct: str | None = None  # a direct URL / path / VCS: not from the index
