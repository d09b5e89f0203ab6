"""Static checks of the shipped platforms' build images (no container engine needed)."""

from __future__ import annotations

import re
import tomllib

import pytest

from platforms import DEFINITIONS_DIR, load_platforms

# The CPython that `python3` is on each OS release (what `apt-get install python3` gives).
DEFAULT_PYTHON = {
    ("debian", "11"): "3.9",
    ("debian", "12"): "3.11",
    ("debian", "13"): "3.13",
    ("ubuntu", "20.04"): "3.8",
    ("ubuntu", "22.04"): "3.10",
    ("ubuntu", "24.04"): "3.12",
}

PLATFORM_FILES = sorted(DEFINITIONS_DIR.glob("*.toml"))


def test_there_are_platforms() -> None:
    assert len(PLATFORM_FILES) >= 4


@pytest.mark.parametrize("path", PLATFORM_FILES, ids=lambda p: p.stem)
def test_platform_names_an_image_dockerfile(path) -> None:  # type: ignore[no-untyped-def]
    data = tomllib.loads(path.read_text())
    dockerfile = data["image"]["dockerfile"]
    assert (DEFINITIONS_DIR / dockerfile).is_file()
    platform = load_platforms()[path.stem]
    assert platform.dockerfile_path == DEFINITIONS_DIR / dockerfile


@pytest.mark.parametrize("path", PLATFORM_FILES, ids=lambda p: p.stem)
def test_dockerfile_builds_from_the_base_image_arg(path) -> None:  # type: ignore[no-untyped-def]
    text = load_platforms()[path.stem].dockerfile_path.read_text()
    instructions = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    froms = [i for i in instructions if i.upper().startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE}"]
    # The ARG must come before FROM to be usable in it.
    first_from = instructions.index(froms[0])
    assert "ARG BASE_IMAGE" in instructions[:first_from]
    # A non-root builder user, and the build tools in a venv (never the system Python).
    assert re.search(r"useradd .*\bbuilder\b", text)
    assert "USER builder" in instructions
    assert re.search(r"-m venv /opt/buildtools", text)
    assert not any("--break-system-packages" in i for i in instructions)
    for tool in ("pip", "build", "wheel", "auditwheel"):
        assert re.search(rf'ARG BUILD_TOOLS="[^"]*\b{tool}\b', text), tool
    # Production points pip elsewhere through build arguments.
    for arg in ("PIP_INDEX_URL", "PIP_CERT", "SYSTEM_PACKAGES"):
        assert re.search(rf"^ARG {arg}\b", text, re.M), arg


@pytest.mark.parametrize("path", PLATFORM_FILES, ids=lambda p: p.stem)
def test_platform_python_is_the_release_default(path) -> None:  # type: ignore[no-untyped-def]
    platform = load_platforms()[path.stem]
    assert (platform.os, platform.release) in DEFAULT_PYTHON, "add the release to the table"
    assert platform.python == DEFAULT_PYTHON[(platform.os, platform.release)]
    assert f"py{platform.python}" in platform.name
