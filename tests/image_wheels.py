"""Wheels for an offline build of the top-level Dockerfile (tests/test_image.py).

The image installs wheelfarm with its ``server`` extra; pip in the build finds
every dependency, and setuptools (the build backend), in a folder of wheels mounted into the
build, with no index. The wheels are fetched once with ``pip download`` (this machine's pip
settings apply) into a git-ignored cache, ``.cache/image-wheels/`` in the checkout or
``$WHEELFARM_TEST_IMAGE_WHEELS``, and fetched again when pyproject.toml's requirements change.

Standard library only: CI's .ci/setup.d/60-image.sh runs this file before the test venv
exists (``python tests/image_wheels.py``; ``--check`` only says whether the cache is current).
tests/test_client_install.py installs the client alone from the same folder.
The interpreter that downloads must be the base image's Python version (3.11 here), as pip
picks the wheels for the running interpreter.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("WHEELFARM_TEST_IMAGE_WHEELS", REPO / ".cache" / "image-wheels"))
EXTRAS = ("server",)  # as the Dockerfile installs it by default (its EXTRAS)
_SELF = re.compile(r"^wheelfarm\[(?P<extras>[^\]]*)\]$")


def requirements(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The build backend's requirements, then the runtime ones with the image's extras (an
    extra naming others, ``wheelfarm[a,b]``, stands for theirs)."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]

    def of_extra(name: str) -> list[str]:
        found = []
        for requirement in project["optional-dependencies"][name]:
            if match := _SELF.match(requirement.replace(" ", "")):
                found += [r for e in match["extras"].split(",") for r in of_extra(e)]
            else:
                found.append(requirement)
        return found

    extras = [r for name in EXTRAS for r in of_extra(name)]
    return [*data["build-system"]["requires"], *project["dependencies"], *extras]


def _marker(cache: Path) -> Path:
    return cache / "wheels" / ".complete"


def is_current(cache: Path = CACHE_DIR) -> bool:
    marker = _marker(cache)
    return marker.exists() and marker.read_text() == "\n".join(requirements()) + "\n"


def image_wheels(cache: Path = CACHE_DIR, python: str = sys.executable) -> Path:
    """The folder of wheels, downloaded with ``python -m pip`` unless it is current."""
    wheels = cache / "wheels"
    if is_current(cache):
        return wheels
    cache.mkdir(parents=True, exist_ok=True)
    # One download at a time (the image test and the client install test may ask at once).
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_current(cache):
            _download(cache, wheels, python)
    return wheels


def _download(cache: Path, wheels: Path, python: str) -> None:
    (cache / ".gitignore").write_text("*\n")
    shutil.rmtree(wheels, ignore_errors=True)  # an older set: start again
    wheels.mkdir()
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--dest",
            str(wheels),
            *requirements(),
        ],
        check=True,
    )
    _marker(cache).write_text("\n".join(requirements()) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        sys.exit(0 if is_current() else 1)
    print(image_wheels())
