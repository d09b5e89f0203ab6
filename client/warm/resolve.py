"""The distributions a platform needs: pip's resolver run for the platform.

``resolve_with_pip`` runs ``pip install --dry-run --report`` (the pip of this interpreter)
through ``pip_shim``, so that pip evaluates markers with the platform's environment and
keeps sdists as candidates while choosing wheels by the platform's tags and Requires-Python
by its Python (see pip_shim for why both need the shim). pip reads wheels' metadata from
PEP 658 ``.metadata`` files without downloading them; an sdist's metadata is prepared on this
machine, by its build backend, in an isolated build environment whose requirements come
from the same index. Pip configuration (files and PIP_* variables) is ignored: the answer is
what the platform's index offers, not what this machine's pip is set up for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from client.warm.environment import marker_environment
from platforms import Platform


@dataclass(frozen=True)
class Pinned:
    """One distribution of the closure: what the platform installs."""

    name: str  # canonical
    version: str
    source: str  # "pip", "pylock.toml", "uv.lock"
    filename: str | None = None  # the file the resolver chose, if it says
    direct: str | None = None  # a direct URL / path / VCS: not from the index


class ResolutionError(Exception):
    """The requirements do not resolve for the platform; ``str()`` holds pip's reason."""


def pip_environment(index_url: str) -> dict[str, str]:
    """This process's environment without pip configuration, with the index to use."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # pip then reads no configuration file at all
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PIP_INDEX_URL=index_url,  # not on the command line: it may hold the token
    )
    return env


def pip_command(
    platform: Platform,
    report: Path,
    requirement_files: Sequence[Path],
    constraint_files: Sequence[Path] = (),
    python: str = sys.executable,
) -> list[str]:
    tags = [f"--platform={tag}" for tag in platform.platform_tags()]
    return [
        python,
        "-m",
        "client.warm.pip_shim",
        json.dumps(marker_environment(platform)),
        "--",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--progress-bar=off",
        f"--report={report}",
        f"--python-version={platform.python}",
        "--implementation=cp",
        f"--abi={platform.interpreter}",
        *tags,
        *(f"--requirement={f}" for f in requirement_files),
        *(f"--constraint={f}" for f in constraint_files),
    ]


def resolve_with_pip(
    platform: Platform,
    index_url: str,
    requirement_files: Sequence[Path],
    constraint_files: Sequence[Path] = (),
    *,
    python: str = sys.executable,
    timeout: float = 1800,
) -> list[Pinned]:
    """The full closure of the requirement files on the platform, as pip resolves it."""
    with tempfile.TemporaryDirectory(prefix="wheelfarm-warm-") as tmp:
        report = Path(tmp) / "report.json"
        command = pip_command(platform, report, requirement_files, constraint_files, python)
        try:
            result = subprocess.run(
                command,
                env=pip_environment(index_url),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ResolutionError(f"pip did not finish resolving within {timeout:.0f} s") from None
        if result.returncode != 0 or not report.exists():
            raise ResolutionError(_pip_failure(result))
        data = json.loads(report.read_text())
    return [_pinned(item) for item in data.get("install", [])]


def _pinned(item: dict) -> Pinned:  # type: ignore[type-arg]
    metadata = item["metadata"]
    url = item.get("download_info", {}).get("url", "")
    path = unquote(urlsplit(url).path)
    direct = None
    if item.get("is_direct"):
        parts = urlsplit(url)
        direct = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no secrets
    return Pinned(
        name=canonicalize_name(metadata["name"]),
        version=str(metadata["version"]),
        source="pip",
        filename=path.rsplit("/", 1)[-1] or None,
        direct=direct,
    )


def _pip_failure(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line.rstrip() for line in (result.stderr or result.stdout).splitlines()]
    lines = [line for line in lines if line.strip()]
    text = "\n".join(lines[-40:]) or f"pip exited with status {result.returncode}"
    return text
