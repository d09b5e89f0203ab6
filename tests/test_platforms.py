"""Platform definitions: loading, tags, validation, and how the HTTP API exposes them."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from packaging import tags
from packaging.tags import Tag

from index_server.config import Settings
from index_server.services import Services
from platforms import DEFINITIONS_DIR, PlatformError, is_pure, load_platforms, parse_platform
from tests.factory import make_wheel
from tests.http_helpers import (
    ALL_PLATFORMS,
    PLATFORM,
    PY310_X86,
    PY311_ARM,
    PY312_ARM,
    PY312_X86,
    PY313_X86,
    services_fixture,
    upload,
)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    """The conftest fixture, from a copy of a migrated database (see http_helpers)."""
    yield from services_fixture(settings)


GOOD = {
    "name": "test-1-py3.11-x86_64",
    "os": "test",
    "release": "1",
    "python": "3.11",
    "arch": "x86_64",
    "glibc": "2.36",
    "base_image": "localhost/test:1",
}


def test_shipped_platforms_load() -> None:
    loaded = load_platforms()
    assert sorted(loaded) == sorted(ALL_PLATFORMS)
    debian = loaded[PLATFORM]
    assert (debian.os, debian.release, debian.python, debian.arch, debian.glibc) == (
        "debian",
        "12",
        "3.11",
        "x86_64",
        "2.36",
    )
    assert debian.interpreter == "cp311"
    assert loaded[PY312_ARM].arch == "aarch64"
    assert loaded[PY310_X86].python_version == (3, 10)
    for platform in loaded.values():
        assert platform.supported_tags, platform.name
        assert len(set(platform.supported_tags)) == len(platform.supported_tags)


def test_supported_tags_match_this_machine() -> None:
    """The platform this machine is (CPython 3.11, Debian 12, glibc 2.36) lists pip's tags."""
    debian = load_platforms()[PLATFORM]
    assert list(debian.supported_tags) == list(tags.sys_tags())


def test_tags_per_platform() -> None:
    loaded = load_platforms()
    arm, py310 = loaded[PY312_ARM], loaded[PY310_X86]
    assert arm.supported_tags[0] == Tag("cp312", "cp312", "linux_aarch64")
    assert "manylinux2014_aarch64" in arm.platform_tags()
    assert "manylinux2010_aarch64" not in arm.platform_tags()  # never defined for aarch64
    assert "manylinux_2_39_aarch64" in arm.platform_tags()
    assert not arm.accepts_wheel("x-1-cp312-cp312-manylinux_2_17_x86_64.whl")
    assert arm.accepts_wheel("x-1-cp312-abi3-manylinux2014_aarch64.whl")
    # glibc 2.35 cannot run a wheel that needs 2.36
    assert not py310.accepts_wheel("x-1-cp310-cp310-manylinux_2_36_x86_64.whl")
    assert py310.accepts_wheel("x-1-cp310-cp310-manylinux_2_35_x86_64.whl")
    assert not py310.accepts_wheel("x-1-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert is_pure([Tag("py3", "none", "any")])
    assert not is_pure([Tag("py3", "none", "any"), Tag("py3", "none", "linux_x86_64")])


def _write(directory: Path, filename: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(textwrap.dedent(text))
    return path


def _toml(values: dict[str, object]) -> str:
    lines = []
    for key, value in values.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def test_custom_platform_directory(tmp_path: Path) -> None:
    _write(tmp_path, "test-1-py3.11-x86_64.toml", _toml(GOOD) + "\n[build]\nmemory = '1g'\n")
    loaded = load_platforms(tmp_path)
    assert list(loaded) == ["test-1-py3.11-x86_64"]
    assert loaded["test-1-py3.11-x86_64"].build_limits == {"memory": "1g"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"os": None}, "'os' must be a non-empty string"),
        ({"python": 3.11}, "'python' must be a non-empty string"),
        ({"python": "3"}, "'python' must look like 3.11"),
        ({"glibc": "two"}, "'glibc' must look like 3.11"),
        ({"arch": "sparc"}, "unknown architecture 'sparc'"),
        ({"name": "Bad Name"}, "invalid platform name 'Bad Name'"),
        ({"name": "api"}, "invalid platform name 'api'"),
        ({"name": "files"}, "invalid platform name 'files'"),
        ({"build": "fast"}, "[build] must be a table"),
        ({"emulated": "yes"}, "'emulated' must be true or false"),
        ({"retired": 1}, "'retired' must be true or false"),
        ({"build": {"slowdown": 0.5}}, "[build] slowdown must be a number >= 1"),
        ({"image": {"debian_suite": "Trixie!"}}, "[image] debian_suite must be"),
        ({"image": {"python_packages": ["python3", "a b"]}}, "[image] python_packages must be"),
    ],
)
def test_bad_definition_rejected(change: dict[str, object], message: str) -> None:
    data = {**GOOD, **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(PlatformError) as excinfo:
        parse_platform(data, source="bad.toml")
    assert str(excinfo.value).startswith("bad.toml: ")
    assert message in str(excinfo.value)


def test_bad_toml_file_rejected_with_file_name(tmp_path: Path) -> None:
    _write(tmp_path, "broken.toml", 'name = "broken"\nos = \n')
    with pytest.raises(PlatformError, match=r"broken\.toml"):
        load_platforms(tmp_path)


def test_file_name_must_match_platform_name(tmp_path: Path) -> None:
    _write(tmp_path, "other-name.toml", _toml(GOOD))
    with pytest.raises(PlatformError, match="file name must be the platform name"):
        load_platforms(tmp_path)


def test_missing_field_in_file(tmp_path: Path) -> None:
    data = {k: v for k, v in GOOD.items() if k != "base_image"}
    _write(tmp_path, f"{GOOD['name']}.toml", _toml(data))
    with pytest.raises(PlatformError, match="'base_image' must be a non-empty string"):
        load_platforms(tmp_path)


def test_api_platforms(client: FlaskClient) -> None:
    response = client.get("/api/platforms")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    listed = {p["name"]: p for p in response.get_json()["platforms"]}
    assert sorted(listed) == sorted(ALL_PLATFORMS)
    debian = listed[PLATFORM]
    assert debian["python"] == "3.11"
    assert debian["arch"] == "x86_64"
    assert debian["glibc"] == "2.36"
    assert debian["best_tag"] == str(next(iter(tags.sys_tags())))
    assert debian["tags_count"] == len(list(tags.sys_tags()))
    assert listed[PY312_ARM]["platform_tags"][0] == "linux_aarch64"
    assert listed[PY312_X86]["best_tag"] == "cp312-cp312-linux_x86_64"
    # The emulated platform says so, with its own (longer) limits; the native ones do not.
    arm = listed[PY311_ARM]
    assert arm["emulated"] is True and arm["best_tag"] == "cp311-cp311-linux_aarch64"
    assert arm["slowdown"] > 1 and arm["build_timeout"] > debian["build_timeout"]
    assert debian["emulated"] is False and debian["slowdown"] == 1
    assert listed[PY313_X86]["best_tag"] == "cp313-cp313-linux_x86_64"
    assert listed[PY313_X86]["glibc"] == "2.41" and not listed[PY313_X86]["emulated"]


def test_debian_platforms_name_their_base_image_recipe() -> None:
    """The locally made base images come from one recipe, parameterised per platform."""
    from builder.images import base_recipe_args

    loaded = load_platforms()
    assert base_recipe_args(loaded[PY313_X86]) == [
        "localhost/debian-13-py3.13-base:latest",
        "trixie",
        "amd64",
        "python3,python3-dev,python3-venv,python3-pip",
    ]
    assert base_recipe_args(loaded[PY311_ARM])[1:3] == ["bookworm", "arm64"]  # type: ignore[index]
    assert base_recipe_args(loaded[PLATFORM])[1:3] == ["bookworm", "amd64"]  # type: ignore[index]
    # Ubuntu platforms stay on their public registry images: no recipe, checked statically.
    for name in (PY310_X86, PY312_X86, PY312_ARM):
        assert base_recipe_args(loaded[name]) is None
        assert loaded[name].base_image.startswith("docker.io/")
        assert not loaded[name].emulated


@pytest.mark.parametrize(
    "url",
    [
        "/nowhere/simple/",
        "/nowhere/simple",
        "/nowhere/simple/some-project/",
        "/nowhere/simple/Some_Project/",
        "/nowhere/simple/some-project",
    ],
)
def test_unknown_platform_pages_404(client: FlaskClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    text = response.get_data(as_text=True)
    assert "unknown platform 'nowhere'" in text
    assert "/api/platforms" in text
    assert "Location" not in response.headers


def test_unknown_platform_upload_404(client: FlaskClient, upload_token: str, tmp_path: Path):
    wheel = make_wheel(tmp_path, "demo", "1.0")
    response = upload(client, wheel, upload_token, platform="nowhere")
    assert response.status_code == 404
    assert "unknown platform 'nowhere'" in response.get_data(as_text=True)


def test_definitions_dir_is_package_dir() -> None:
    assert {p.stem for p in DEFINITIONS_DIR.glob("*.toml")} == set(ALL_PLATFORMS)


@pytest.mark.parametrize(
    "args",
    [
        ["x", "bookworm", "arm64;true"],
        ["x", "Bookworm", "amd64"],
        ["x", "trixie", "amd64", "python3 python3-dev"],
    ],
)
def test_base_image_recipe_refuses_bad_arguments(args: list[str]) -> None:
    """The one debootstrap recipe checks its parameters before touching anything."""
    import subprocess

    from builder.images import BASE_RECIPE

    done = subprocess.run(
        ["bash", str(BASE_RECIPE), *args], capture_output=True, text=True, env={"ENGINE": "false"}
    )
    assert done.returncode == 2 and done.stderr.startswith("usage: make-debian-base.sh")
