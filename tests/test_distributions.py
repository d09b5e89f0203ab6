"""Distribution files: names from filenames, core metadata from archives, refusals."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.tags import Tag
from packaging.version import Version

from index_server.distributions import (
    MAX_METADATA_BYTES,
    InvalidDistribution,
    parse_filename,
    read_core_metadata,
)
from tests.factory import core_metadata, make_sdist, make_wheel


@pytest.mark.parametrize(
    ("filename", "project", "version", "packagetype", "binary"),
    [
        ("demo-1.0-py3-none-any.whl", "demo", "1.0", "bdist_wheel", False),
        ("Demo_Pkg-2.0.post1-py2.py3-none-any.whl", "demo-pkg", "2.0.post1", "bdist_wheel", False),
        (
            "numpy-2.1.0-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "numpy",
            "2.1.0",
            "bdist_wheel",
            True,
        ),
        ("demo-1.0rc1-cp311-abi3-linux_x86_64.whl", "demo", "1.0rc1", "bdist_wheel", True),
        ("demo-1.0.tar.gz", "demo", "1.0", "sdist", False),
        ("demo_pkg-1.0.dev3.tar.gz", "demo-pkg", "1.0.dev3", "sdist", False),
        ("demo-1!2.0+local.1.zip", "demo", "1!2.0+local.1", "sdist", False),
    ],
)
def test_parse_valid(
    filename: str, project: str, version: str, packagetype: str, binary: bool
) -> None:
    dist = parse_filename(filename)
    assert dist.filename == filename
    assert dist.project == project
    assert dist.version == Version(version)
    assert dist.packagetype == packagetype
    assert dist.is_wheel == (packagetype == "bdist_wheel")
    assert dist.is_binary == binary


def test_parse_wheel_tags() -> None:
    dist = parse_filename("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert dist.tags == {
        Tag("cp311", "cp311", "manylinux_2_17_x86_64"),
        Tag("cp311", "cp311", "manylinux2014_x86_64"),
    }
    assert parse_filename("demo-1.0.tar.gz").tags == frozenset()


@pytest.mark.parametrize(
    "filename",
    [
        "../x.whl",
        "../demo-1.0-py3-none-any.whl",
        "a/b.whl",
        "a/demo-1.0-py3-none-any.whl",
        "a\\demo-1.0-py3-none-any.whl",
        "/abs/demo-1.0-py3-none-any.whl",
        "x.whl\x00",
        "demo-1.0-py3-none-any.whl\x00.tar.gz",
        "demo-1.0-py3-none-any.whl\n",
        "demo-1.0.tar.gz\n",
        ".demo-1.0.tar.gz",
        "demo 1.0.tar.gz",
        "",
        "d" * 250 + "-1.0.tar.gz",
    ],
)
def test_parse_refuses_unsafe_names(filename: str) -> None:
    with pytest.raises(InvalidDistribution, match="invalid filename"):
        parse_filename(filename)


@pytest.mark.parametrize(
    "filename",
    [
        "x.whl",
        "demo-1.0.whl",
        "demo-notaversion-py3-none-any.whl",
        "demo-1.0-py3-none.whl",
        "demo--1.0-py3-none-any.whl",
        "demo.tar.gz",
        "demo-.tar.gz",
        "demo-one.zip",
    ],
)
def test_parse_refuses_bad_names(filename: str) -> None:
    with pytest.raises(InvalidDistribution, match=r"^invalid filename '.*': "):
        parse_filename(filename)


@pytest.mark.parametrize(
    "filename",
    ["demo-1.0-py3.11.egg", "demo-1.0.win32.exe", "demo-1.0.tar.bz2", "demo-1.0.tgz", "demo.txt"],
)
def test_parse_refuses_unsupported_types(filename: str) -> None:
    with pytest.raises(InvalidDistribution, match="unsupported file type") as excinfo:
        parse_filename(filename)
    assert "\n" not in str(excinfo.value)


def test_read_wheel_metadata(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "Demo.Pkg", "1.2", requires=["attrs>=1"], requires_python=">=3.9")
    meta = read_core_metadata(wheel, parse_filename(wheel.name))
    with zipfile.ZipFile(wheel) as archive:
        expected = archive.read("demo_pkg-1.2.dist-info/METADATA")
    assert meta.raw == expected
    assert meta.name == "Demo.Pkg"
    assert meta.version == Version("1.2")
    assert meta.requires_python == ">=3.9"


def test_read_tar_sdist_metadata(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "demo", "3.0", requires_python="<4,>=3.8")
    meta = read_core_metadata(sdist, parse_filename(sdist.name))
    assert meta.raw == core_metadata("demo", "3.0", requires_python="<4,>=3.8").encode()
    assert meta.name == "demo"
    assert meta.version == Version("3.0")
    assert meta.requires_python == "<4,>=3.8"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_read_zip_sdist_metadata(tmp_path: Path) -> None:
    raw = core_metadata("demo", "3.0").encode()
    sdist = _zip(tmp_path / "demo-3.0.zip", {"demo-3.0/PKG-INFO": raw, "demo-3.0/setup.py": b""})
    meta = read_core_metadata(sdist, parse_filename(sdist.name))
    assert meta.raw == raw
    assert meta.requires_python is None


def test_sdist_without_pkg_info(tmp_path: Path) -> None:
    sdist = _zip(tmp_path / "demo-3.0.zip", {"demo-3.0/setup.py": b""})
    with pytest.raises(InvalidDistribution, match="PKG-INFO"):
        read_core_metadata(sdist, parse_filename(sdist.name))
    tar = tmp_path / "demo-3.0.tar.gz"
    with tarfile.open(tar, "w:gz") as archive:
        info = tarfile.TarInfo("demo-3.0/setup.py")
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(InvalidDistribution, match="must contain a top-level PKG-INFO"):
        read_core_metadata(tar, parse_filename(tar.name))


def test_sdist_not_a_tarball(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0.tar.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(InvalidDistribution, match=r"not a valid \.tar\.gz archive"):
        read_core_metadata(path, parse_filename(path.name))


def test_wheel_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(b"PK\x03\x04 but not really a zip file")
    with pytest.raises(InvalidDistribution, match="not a valid zip archive") as excinfo:
        read_core_metadata(path, parse_filename(path.name))
    assert "\n" not in str(excinfo.value)


def test_zip_without_metadata(tmp_path: Path) -> None:
    path = _zip(tmp_path / "demo-1.0-py3-none-any.whl", {"demo/__init__.py": b""})
    with pytest.raises(InvalidDistribution, match=r"exactly one \.dist-info/METADATA, found 0"):
        read_core_metadata(path, parse_filename(path.name))


def test_zip_with_two_metadata(tmp_path: Path) -> None:
    raw = core_metadata("demo", "1.0").encode()
    path = _zip(
        tmp_path / "demo-1.0-py3-none-any.whl",
        {"demo-1.0.dist-info/METADATA": raw, "other-1.0.dist-info/METADATA": raw},
    )
    with pytest.raises(InvalidDistribution, match="found 2"):
        read_core_metadata(path, parse_filename(path.name))


def test_metadata_name_disagrees_with_filename(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0", metadata=core_metadata("other", "1.0"))
    with pytest.raises(InvalidDistribution, match="metadata name 'other' does not match"):
        read_core_metadata(wheel, parse_filename(wheel.name))


def test_metadata_version_disagrees_with_filename(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0", metadata=core_metadata("demo", "1.1"))
    with pytest.raises(InvalidDistribution, match=r"metadata version 1\.1 does not match"):
        read_core_metadata(wheel, parse_filename(wheel.name))
    sdist = make_sdist(tmp_path, "demo", "1.0", pkg_info=core_metadata("demo", "2.0"))
    with pytest.raises(InvalidDistribution, match=r"metadata version 2\.0 does not match"):
        read_core_metadata(sdist, parse_filename(sdist.name))


def test_equivalent_name_and_version_accepted(tmp_path: Path) -> None:
    """Normalization: Demo.Pkg 1.0.0 in METADATA is the same as demo_pkg-1.0.0."""
    wheel = make_wheel(tmp_path, "demo_pkg", "1.0", metadata=core_metadata("Demo.Pkg", "1.0.0"))
    meta = read_core_metadata(wheel, parse_filename(wheel.name))
    assert meta.name == "Demo.Pkg"


def test_metadata_without_name(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", "1.0", metadata="Metadata-Version: 2.1\nVersion: 1.0\n\n")
    with pytest.raises(InvalidDistribution, match="invalid core metadata"):
        read_core_metadata(wheel, parse_filename(wheel.name))


def test_invalid_requires_python(tmp_path: Path) -> None:
    text = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Python: >=three\n\n"
    wheel = make_wheel(tmp_path, "demo", "1.0", metadata=text)
    with pytest.raises(InvalidDistribution, match="Requires-Python"):
        read_core_metadata(wheel, parse_filename(wheel.name))


def test_oversize_metadata_in_wheel(tmp_path: Path) -> None:
    """A METADATA whose declared size exceeds the limit is refused (cheap: it compresses)."""
    big = core_metadata("demo", "1.0").encode() + b"X" * (MAX_METADATA_BYTES + 1)
    path = _zip(tmp_path / "demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": big})
    assert path.stat().st_size < 100_000
    with pytest.raises(InvalidDistribution, match=f"larger than {MAX_METADATA_BYTES} bytes"):
        read_core_metadata(path, parse_filename(path.name))


def test_metadata_lying_about_its_size(tmp_path: Path) -> None:
    """A zip whose headers claim a small METADATA but which inflates to more is refused."""
    real = core_metadata("demo", "1.0").encode() + b"X" * (MAX_METADATA_BYTES + 1)
    path = _zip(tmp_path / "demo-1.0-py3-none-any.whl", {"demo-1.0.dist-info/METADATA": real})
    data = bytearray(path.read_bytes())
    true_size = len(real).to_bytes(4, "little")
    # Rewrite the uncompressed size in the local header and the central directory.
    assert data.count(true_size) == 2
    data[:] = data.replace(true_size, (100).to_bytes(4, "little"))
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("demo-1.0.dist-info/METADATA").file_size == 100
    with pytest.raises(InvalidDistribution):
        read_core_metadata(path, parse_filename(path.name))


def test_oversize_pkg_info_in_sdist(tmp_path: Path) -> None:
    big = core_metadata("demo", "1.0") + "X" * (MAX_METADATA_BYTES + 1)
    sdist = make_sdist(tmp_path, "demo", "1.0", pkg_info=big)
    assert sdist.stat().st_size < 100_000
    with pytest.raises(InvalidDistribution, match="PKG-INFO is larger than"):
        read_core_metadata(sdist, parse_filename(sdist.name))


def test_pkg_info_not_a_regular_file(tmp_path: Path) -> None:
    tar = tmp_path / "demo-1.0.tar.gz"
    with tarfile.open(tar, "w:gz") as archive:
        info = tarfile.TarInfo("demo-1.0/PKG-INFO")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(InvalidDistribution, match="PKG-INFO is not a regular file"):
        read_core_metadata(tar, parse_filename(tar.name))
