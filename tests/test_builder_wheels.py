"""What the import check imports, and the SOURCE_DATE_EPOCH of an sdist."""

from __future__ import annotations

import zipfile
from pathlib import Path

from builder.build import BuildSettings
from builder.wheels import ZIP_EPOCH, requires_dist, sdist_epoch, top_level_modules
from tests.builder_helpers import make_pure_sdist
from tests.factory import make_wheel


def test_top_level_from_top_level_txt(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path,
        "Demo-Pkg",
        "1.0",
        modules={"demo_pkg/__init__.py": "", "helper.py": "", "_speed.py": ""},
        requires=["attrs>=20"],
    )
    assert top_level_modules(wheel) == ["_speed", "demo_pkg", "helper"]
    assert requires_dist(wheel) == ["attrs>=20"]


def test_top_level_from_record_without_top_level_txt(tmp_path: Path) -> None:
    wheel = tmp_path / "demo-1.0-cp311-cp311-linux_x86_64.whl"
    record = "\n".join(
        [
            "demo/__init__.py,,",
            "demo/sub/__init__.py,,",
            "_cdemo.cpython-311-x86_64-linux-gnu.so,,",
            "single.py,,",
            "demo-1.0.data/scripts/tool,,",
            "demo-1.0.dist-info/METADATA,,",
            "demo-1.0.dist-info/RECORD,,",
        ]
    )
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo-1.0.dist-info/RECORD", record)
        zf.writestr("demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\n\n")
    assert top_level_modules(wheel) == ["_cdemo", "demo", "single"]
    assert requires_dist(wheel) == []


def test_sdist_epoch_is_the_newest_member(tmp_path: Path) -> None:
    sdist = make_pure_sdist(tmp_path)  # members dated 1_700_000_000
    assert sdist_epoch(sdist) == 1_700_000_000
    broken = tmp_path / "broken-1.0.tar.gz"
    broken.write_bytes(b"not a tarball")
    assert sdist_epoch(broken) == ZIP_EPOCH


def test_build_settings_refuse_reserved_env() -> None:
    BuildSettings(env={"CFLAGS": "-O1"})
    try:
        BuildSettings(env={"PIP_INDEX_URL": "http://elsewhere/"})
    except ValueError as exc:
        assert "PIP_INDEX_URL" in str(exc)
    else:
        raise AssertionError("a project must not change the index")
