"""Hostile input, property-based (hypothesis): every parser and every endpoint that takes
input answers a 4xx or handles it, never a 500, never a hang, never a file outside storage,
never unbounded memory.

The parsers are called directly (many examples); the endpoints through the in-process Flask
test client with exceptions propagated (a bug fails with its traceback, and hypothesis
shrinks the input). Archive bombs are built byte by byte (``tests/hostile_helpers.py``).
Run ``pytest tests/test_hostile_input.py --hypothesis-show-statistics`` for the counts;
``HYPOTHESIS_PROFILE=wheelfarm-long`` fuzzes longer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import assume, example, given
from hypothesis import strategies as st
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from werkzeug.test import TestResponse

from builder import protocol
from index_server import distributions
from index_server.app import create_app
from index_server.auth import SCOPES, create_token
from index_server.config import Settings
from index_server.distributions import (
    CoreMetadata,
    DistributionName,
    InvalidDistribution,
    parse_filename,
    read_core_metadata,
)
from index_server.services import Services
from index_server.simple.model import SimpleFile
from index_server.upstream.parse import (
    UpstreamPageError,
    parse_html_page,
    parse_json_page,
    parse_project_page,
)
from tests.conftest import ADMIN_TOKEN
from tests.factory import core_metadata, make_sdist, make_wheel
from tests.hostile_helpers import (
    ARCHIVE_EXAMPLES,
    COMPRESSIONS,
    HTTP_EXAMPLES,
    MARKER,
    NASTY_FILENAMES,
    NASTY_PATHS,
    PARSER_EXAMPLES,
    UPLOAD_EXAMPLES,
    TarMember,
    ZipMember,
    blob_files_are_blobs,
    bounded,
    build_tar,
    build_tar_gz,
    build_zip,
    examples,
    filenames,
    flipped,
    json_bodies,
    json_values,
    marked_paths,
    metadata_bytes,
    set_declared_size,
    stray_files,
    tar_gz_bomb,
    tar_gz_with_many_members,
    valid_names,
    valid_versions,
    wheel_tags,
    zip_with_many_entries,
)
from tests.http_helpers import (
    PLATFORM,
    V1_HTML,
    V1_JSON,
    basic_auth,
    bearer,
    fast_services,
    sha256_of,
    upload_ok,
)

pytestmark = pytest.mark.timeout(180)

PAGE_TYPES = ("text/html", V1_HTML, V1_JSON)
METADATA = core_metadata("demo", "1.0").encode()
WHEEL_NAME = "demo-1.0-py3-none-any.whl"
WHEEL_META = "demo-1.0.dist-info/METADATA"
SDIST_NAME = "demo-1.0.tar.gz"
# Statuses a hostile request may get: handled, or refused for a reason the client can fix.
HANDLED = range(200, 400)
REFUSED = range(400, 500)


@dataclass
class Farm:
    """One server (in-process) for the whole module, with a wheel, an sdist and a build."""

    app: Flask
    client: FlaskClient
    services: Services
    root: Path
    data_dir: Path
    scratch: Path
    tokens: dict[str, str]
    wheel: bytes
    wheel_url: str
    sdist_url: str
    job_id: int

    def auth(self, scope: str) -> dict[str, str]:
        return bearer(self.tokens[scope])


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    root = tmp_path_factory.mktemp("hostile")
    settings = Settings.from_env(
        {},
        data_dir=root / "data",
        admin_token=ADMIN_TOKEN,
        upstream_urls=(),
        max_upload_bytes=64 * 2**20,
    )
    services = fast_services(settings)
    app = create_app(services=services)
    app.config["PROPAGATE_EXCEPTIONS"] = True  # a bug raises here, with its traceback
    client = app.test_client()
    tokens = {scope: create_token(services.engine, scope, scope)[1] for scope in SCOPES}
    wheel = make_wheel(root, "demo", "1.0")
    sdist = make_sdist(root, "demo", "1.0")
    upload_ok(client, wheel, tokens["upload"])
    upload_ok(client, sdist, tokens["upload"])
    requested = client.post(
        "/api/builds",
        json={"project": "buildme", "version": "1.0", "platforms": [PLATFORM]},
        headers=bearer(tokens["upload"]),
    )
    assert requested.status_code == 200, requested.get_data(as_text=True)
    job_id = int(requested.get_json()["requests"][0]["job_id"])
    scratch = root / "scratch"
    scratch.mkdir()
    yield Farm(
        app=app,
        client=client,
        services=services,
        root=root,
        data_dir=settings.data_dir,
        scratch=scratch,
        tokens=tokens,
        wheel=wheel.read_bytes(),
        wheel_url=f"/files/{sha256_of(wheel)}/{wheel.name}",
        sdist_url=f"/files/{sha256_of(sdist)}/{sdist.name}",
        job_id=job_id,
    )
    services.engine.dispose()
    # Whatever ran in this module: nothing named with the marker outside the storage.
    roots = (root, Path.cwd(), Path(tempfile.gettempdir()))
    assert marked_paths(*roots) == []


def not_a_crash(response: TestResponse, *allowed: range) -> None:
    """A hostile request is handled or refused: never a 5xx (exceptions already raised)."""
    ranges = allowed or (HANDLED, REFUSED)
    assert any(response.status_code in r for r in ranges), (
        response.status_code,
        response.get_data()[:300],
    )


def assert_clean(farm: Farm) -> None:
    assert stray_files(farm.data_dir) == []
    assert blob_files_are_blobs(farm.data_dir) == []


def scratch_file(farm: Farm, name: str, data: bytes) -> Path:
    """A file for a parser to read, in a fresh folder (examples may run in any order)."""
    folder = Path(tempfile.mkdtemp(dir=farm.scratch))
    path = folder / name
    path.write_bytes(data)
    return path


def read_or_refuse(path: Path, filename: str) -> CoreMetadata | None:
    """The parser's contract: metadata, or InvalidDistribution, and nothing else."""
    try:
        return read_core_metadata(path, parse_filename(filename))
    except InvalidDistribution as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


# === filenames, names and versions ===========================================================


@examples(PARSER_EXAMPLES)
@given(filename=filenames())
def test_parse_filename_accepts_only_safe_names(filename: str) -> None:
    try:
        dist = parse_filename(filename)
    except InvalidDistribution as exc:
        assert "\n" not in str(exc) or "\n" in filename
        return
    assert isinstance(dist, DistributionName)
    assert len(filename) <= 255
    assert not set(filename) & set("/\\\x00:\n\r ") and not filename.startswith(".")
    assert dist.project == canonicalize_name(dist.project)
    assert filename.endswith(".whl") == dist.is_wheel == (dist.packagetype == "bdist_wheel")
    assert dist.is_wheel or filename.endswith((".tar.gz", ".zip"))


@examples(PARSER_EXAMPLES)
@given(
    name=valid_names,
    version=valid_versions,
    tag=wheel_tags,
    kind=st.sampled_from(["wheel", "sdist-tar", "sdist-zip"]),
)
def test_parse_filename_round_trips_valid_names(
    name: str, version: str, tag: str, kind: str
) -> None:
    escaped = re.sub(r"[-_.]+", "_", name)
    filename = {
        "wheel": f"{escaped}-{version}-{tag}.whl",
        "sdist-tar": f"{escaped}-{version}.tar.gz",
        "sdist-zip": f"{escaped}-{version}.zip",
    }[kind]
    dist = parse_filename(filename)
    assert dist.project == canonicalize_name(name)
    assert dist.version == Version(version)
    assert dist.is_wheel == (kind == "wheel")


# === core metadata ===========================================================================


@examples(PARSER_EXAMPLES)
@given(raw=metadata_bytes("demo", "1.0"), kind=st.sampled_from(["wheel", "sdist"]))
def test_core_metadata_is_read_or_refused(farm: Farm, raw: bytes, kind: str) -> None:
    if kind == "wheel":
        data = build_zip([ZipMember("demo-1.0.dist-info/METADATA", raw)])
        filename = WHEEL_NAME
    else:
        data = build_tar_gz([TarMember("demo-1.0/PKG-INFO", raw)])
        filename = SDIST_NAME
    meta = read_or_refuse(scratch_file(farm, filename, data), filename)
    if meta is None:
        return
    assert meta.raw == raw
    assert canonicalize_name(meta.name) == "demo" and meta.version == Version("1.0")
    if meta.requires_python is not None:
        SpecifierSet(meta.requires_python)


# === zip archives (wheels, zip sdists) =======================================================

_member_names = st.one_of(
    st.sampled_from(["demo-1.0.dist-info/METADATA", "demo-1.0/PKG-INFO", "demo/__init__.py"]),
    st.sampled_from(NASTY_PATHS),
    st.text(max_size=30),
)
_member_data = st.one_of(
    st.just(METADATA),
    st.binary(max_size=200),
    st.builds(lambda n: METADATA + b"\0" * n, st.integers(0, 2**20)),
)
zip_members = st.builds(
    ZipMember,
    name=_member_names,
    data=_member_data,
    compress_type=st.sampled_from(COMPRESSIONS),
    symlink=st.booleans(),
    flag_bits=st.sampled_from([0, 0, 0, 0x1, 0x8, 0x40, 0x800]),
)


@st.composite
def hostile_zips(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(zip_members, min_size=0, max_size=6))
    if draw(st.booleans()):  # a good METADATA somewhere, so that damage is what decides
        members.insert(draw(st.integers(0, len(members))), ZipMember(WHEEL_META, METADATA))
    data = build_zip(members)
    damage = draw(st.sampled_from(["none", "flip", "truncate", "declared-size", "prefix"]))
    if damage == "flip":
        data = draw(flipped(data))
    elif damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "declared-size":
        data = set_declared_size(data, draw(st.sampled_from([0, 1, 100, 2**31, 2**32 - 1])))
    elif damage == "prefix":  # junk before the zip (self-extracting style)
        data = draw(st.binary(min_size=1, max_size=64)) + data
    return data


@examples(ARCHIVE_EXAMPLES)
@given(data=hostile_zips(), filename=st.sampled_from([WHEEL_NAME, "demo-1.0.zip"]))
def test_hostile_zip_archives(farm: Farm, data: bytes, filename: str) -> None:
    path = scratch_file(farm, filename, data)
    with bounded(max_seconds=5, max_mib=64):
        meta = read_or_refuse(path, filename)
    if meta is not None:
        assert len(meta.raw) <= distributions.MAX_METADATA_BYTES


# === tar.gz sdists ===========================================================================

_tar_names = st.one_of(
    st.sampled_from(["demo-1.0/PKG-INFO", "demo-1.0/setup.py", "demo-1.0", "PKG-INFO"]),
    st.sampled_from(NASTY_PATHS).filter(lambda n: "\x00" not in n and n),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=30).filter(
        bool
    ),
)
tar_members = st.builds(
    TarMember,
    name=_tar_names,
    data=_member_data,
    kind=st.sampled_from(["file", "file", "symlink", "hardlink", "dir", "fifo", "chardev"]),
    linkname=st.sampled_from(["", "/etc/passwd", "../../PKG-INFO", "demo-1.0/PKG-INFO"]),
    declared_size=st.one_of(st.none(), st.sampled_from([0, 1, 511, 513, 2**33, 8**11 - 1])),
    pax=st.one_of(
        st.just({}),
        st.dictionaries(
            st.sampled_from(["path", "size", "linkpath", "uid", "comment", "hdrcharset"]),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=20),
            max_size=2,
        ),
    ),
)


@st.composite
def hostile_tar_gzs(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(tar_members, max_size=6))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(members)))
        members.insert(at, TarMember("demo-1.0/PKG-INFO", METADATA))
    try:
        tar = build_tar(members)
    except (ValueError, UnicodeError, OverflowError):  # tarfile would not write that header
        assume(False)
    damage = draw(st.sampled_from(["none", "flip-tar", "flip-gz", "truncate", "not-gzip"]))
    if damage == "flip-tar":
        tar = draw(flipped(tar))
    data = tar if damage == "not-gzip" else gzip.compress(tar, compresslevel=1, mtime=0)
    if damage == "flip-gz":
        data = draw(flipped(data))
    elif damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    return data


@examples(ARCHIVE_EXAMPLES)
@given(data=hostile_tar_gzs())
def test_hostile_tar_gz_sdists(farm: Farm, data: bytes) -> None:
    path = scratch_file(farm, SDIST_NAME, data)
    with bounded(max_seconds=5, max_mib=64):
        meta = read_or_refuse(path, SDIST_NAME)
    if meta is not None:
        assert canonicalize_name(meta.name) == "demo"


# === bombs and floods: refused fast, in bounded memory, by the parser and over HTTP ==========


def upload_bytes(
    farm: Farm, filename: str, data: bytes, fields: dict[str, Any] | None = None
) -> TestResponse:
    form: dict[str, Any] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "content": (io.BytesIO(data), filename, "application/octet-stream"),
        **(fields or {}),
    }
    return farm.client.post(
        f"/{PLATFORM}/legacy/",
        data=form,
        headers=basic_auth(farm.tokens["upload"]),
        content_type="multipart/form-data",
    )


def refused_everywhere(
    farm: Farm, filename: str, data: bytes, reason: str, max_seconds: float, max_mib: float
) -> None:
    """Refused by the parser within the bounds, and over HTTP with a 400 saying why."""
    path = scratch_file(farm, filename, data)
    with bounded(max_seconds, max_mib), pytest.raises(InvalidDistribution, match=reason):
        read_core_metadata(path, parse_filename(filename))
    response = upload_bytes(farm, filename, data)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert re.search(reason, response.get_data(as_text=True))
    assert_clean(farm)


# A project nobody uploads: the bombs must be refused by the parser, not as duplicates.
BOOM_META = core_metadata("boom", "1.0").encode()
BOOM_WHEEL = "boom-1.0-py3-none-any.whl"
BOOM_WHEEL_META = "boom-1.0.dist-info/METADATA"
BOOM_SDIST = "boom-1.0.tar.gz"


def test_zip_bomb_metadata_declared_small(farm: Farm) -> None:
    """METADATA says 1000 bytes but inflates to 64 MiB: only the declared bytes are read."""
    bomb = build_zip([ZipMember(BOOM_WHEEL_META, BOOM_META + b"\0" * (64 * 2**20))])
    assert len(bomb) < 200_000
    refused_everywhere(farm, BOOM_WHEEL, set_declared_size(bomb, 1000), "Bad CRC", 2, 16)


def test_zip_bomb_metadata_declared_huge(farm: Farm) -> None:
    bomb = set_declared_size(build_zip([ZipMember(BOOM_WHEEL_META, BOOM_META)]), 2**32 - 1)
    refused_everywhere(farm, BOOM_WHEEL, bomb, "larger than", 1, 16)


def test_zip_with_too_many_members_is_refused_before_they_are_read(farm: Farm) -> None:
    count = distributions.MAX_ARCHIVE_MEMBERS + 1
    # an honest count: refused from the end record, the directory is never parsed
    refused_everywhere(farm, BOOM_WHEEL, zip_with_many_entries(count), "more than", 1, 16)
    # a directory too big to parse (zipfile keeps ~270 bytes a member), whatever it claims
    big = distributions.MAX_ZIP_DIRECTORY_BYTES // 46 + 1
    refused_everywhere(farm, BOOM_WHEEL, zip_with_many_entries(big, declared=1), "more than", 1, 16)


def test_zip_with_a_lying_member_count(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The end record says 1, the directory (small enough to parse) holds one member more
    than the limit (lowered here, as parsing 200,000 entries takes seconds): refused."""
    monkeypatch.setattr(distributions, "MAX_ARCHIVE_MEMBERS", 2000)
    data = zip_with_many_entries(2001, declared=1)
    refused_everywhere(farm, BOOM_WHEEL, data, "more than 2000 members", 2, 16)


def test_tar_gz_bomb_before_pkg_info(farm: Farm) -> None:
    """4 GiB of zeros (4 MB compressed) before PKG-INFO: refused without inflating it all."""
    bomb = tar_gz_bomb("boom", "1.0", 4 * 2**30, BOOM_META)
    assert len(bomb) < 8 * 2**20
    refused_everywhere(farm, BOOM_SDIST, bomb, "no PKG-INFO in the first", 2, 16)


def test_tar_gz_with_incompressible_content_before_pkg_info_is_accepted(farm: Farm) -> None:
    """The bomb limit leaves real sdists alone: PKG-INFO after 12 MiB of random bytes."""
    root = "boom-1.0"
    data = build_tar_gz(
        [
            TarMember(f"{root}/data.bin", os.urandom(12 * 2**20)),
            TarMember(f"{root}/PKG-INFO", BOOM_META),
        ]
    )
    meta = read_core_metadata(scratch_file(farm, BOOM_SDIST, data), parse_filename(BOOM_SDIST))
    assert meta.name == "boom"


def test_tar_gz_with_too_many_members(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The member limit holds (lowered here: 200,000 tar headers take seconds to walk)."""
    monkeypatch.setattr(distributions, "MAX_ARCHIVE_MEMBERS", 2000)
    data = tar_gz_with_many_members("boom", "1.0", 2000, BOOM_META)
    refused_everywhere(farm, BOOM_SDIST, data, "more than 2000 members", 3, 32)


@pytest.mark.parametrize(
    "member",
    [
        TarMember("boom-1.0/PKG-INFO", kind="symlink", linkname="/etc/passwd"),
        TarMember("boom-1.0/PKG-INFO", kind="hardlink", linkname="/etc/passwd"),
        TarMember("boom-1.0/PKG-INFO", kind="fifo"),
        TarMember("boom-1.0/PKG-INFO", kind="dir"),
        TarMember("boom-1.0/PKG-INFO", BOOM_META, declared_size=2**33),
        TarMember("/boom-1.0/PKG-INFO", BOOM_META),
        TarMember("../boom-1.0/PKG-INFO", BOOM_META),
        TarMember("boom-1.0/../../PKG-INFO", BOOM_META),
    ],
    ids=["symlink", "hardlink", "fifo", "dir", "huge-size", "absolute", "dotdot", "escape"],
)
def test_tar_pkg_info_that_is_not_a_plain_member(farm: Farm, member: TarMember) -> None:
    data = build_tar_gz([member])
    with bounded(2, 16):
        assert read_or_refuse(scratch_file(farm, BOOM_SDIST, data), BOOM_SDIST) is None
    response = upload_bytes(farm, BOOM_SDIST, data)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert_clean(farm)


@pytest.mark.parametrize(
    "members",
    [
        [ZipMember(BOOM_WHEEL_META, BOOM_META, symlink=True)],  # a "symlink": just bytes
        [ZipMember(f"../../{MARKER}/x.dist-info/METADATA", BOOM_META)],
        [ZipMember(f"/{MARKER}-abs.dist-info/METADATA", BOOM_META)],
        [ZipMember(BOOM_WHEEL_META, BOOM_META), ZipMember(f"../../{MARKER}-evil.py", b"")],
        [ZipMember(BOOM_WHEEL_META, BOOM_META), ZipMember(BOOM_WHEEL_META, BOOM_META)],
        [ZipMember(BOOM_WHEEL_META, BOOM_META, flag_bits=0x1)],  # "encrypted"
    ],
    ids=["symlink", "dotdot-meta", "abs-meta", "escaping-member", "duplicate", "encrypted"],
)
def test_zip_members_are_never_extracted(farm: Farm, members: list[ZipMember]) -> None:
    """Whatever the member paths say, an upload writes only its blob into storage."""
    response = upload_bytes(farm, BOOM_WHEEL, build_zip(members))
    not_a_crash(response)
    assert_clean(farm)
    assert marked_paths(farm.root, Path.cwd(), Path(tempfile.gettempdir())) == []


# === the upload endpoint: multipart bodies ===================================================

_FORM_KEYS = (
    ":action",
    "protocol_version",
    "name",
    "version",
    "filetype",
    "pyversion",
    "metadata_version",
    "sha256_digest",
    "md5_digest",
    "blake2_256_digest",
    "content",
)
_form_text = st.one_of(
    st.sampled_from(["file_upload", "1", "demo", "1.0", "sdist", "bdist_wheel", "source", ""]),
    st.text(max_size=40),
    st.sampled_from(["\x00", "x" * 3000, "../..", "1.0\x00"]),
)
_content = st.builds(
    lambda data, name: (io.BytesIO(data), name, "application/octet-stream"),
    st.one_of(
        st.binary(max_size=300),
        st.sampled_from(["wheel", "sdist"]).map(
            lambda k: (
                build_zip([ZipMember(WHEEL_META, METADATA)])
                if k == "wheel"
                else build_tar_gz([TarMember("demo-1.0/PKG-INFO", METADATA)])
            )
        ),
    ),
    st.one_of(
        st.sampled_from([WHEEL_NAME, SDIST_NAME, "", *NASTY_FILENAMES]), st.text(max_size=40)
    ),
)
_form_value = st.one_of(_form_text, _content, st.lists(st.one_of(_form_text, _content), max_size=3))


@examples(UPLOAD_EXAMPLES)
@given(
    fields=st.dictionaries(
        st.one_of(st.sampled_from(_FORM_KEYS), st.text(max_size=12)), _form_value, max_size=8
    ),
    platform=st.sampled_from([PLATFORM, PLATFORM, "no-such-platform", "..", "%00"]),
)
def test_upload_with_random_multipart_fields(
    farm: Farm, fields: dict[str, Any], platform: str
) -> None:
    response = farm.client.post(
        f"/{platform}/legacy/",
        data=fields,
        headers=basic_auth(farm.tokens["upload"]),
        content_type="multipart/form-data",
    )
    not_a_crash(response)
    if response.status_code in (200, 201):
        body = response.get_json()
        assert parse_filename(body["filename"]).project == "demo"
    assert_clean(farm)


@examples(UPLOAD_EXAMPLES)
@given(
    body=st.one_of(
        st.binary(max_size=500),
        st.lists(
            st.one_of(
                st.just(b"--b\r\n"),
                st.just(b'Content-Disposition: form-data; name="content"; filename="x.whl"\r\n'),
                st.just(b'Content-Disposition: form-data; name=":action"\r\n'),
                st.just(b"Content-Type: application/octet-stream\r\n"),
                st.just(b"\r\n"),
                st.just(b"--b--\r\n"),
                st.binary(max_size=40),
            ),
            max_size=12,
        ).map(b"".join),
    ),
    content_type=st.sampled_from(
        [
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=" + "b" * 300,
            "application/x-www-form-urlencoded",
            "application/octet-stream",
            "",
        ]
    ),
)
def test_upload_with_raw_junk_bodies(farm: Farm, body: bytes, content_type: str) -> None:
    response = farm.client.post(
        f"/{PLATFORM}/legacy/",
        data=body,
        headers={**basic_auth(farm.tokens["upload"]), "Content-Type": content_type},
    )
    not_a_crash(response, REFUSED)
    assert_clean(farm)


@examples(UPLOAD_EXAMPLES)
@given(
    kind=st.sampled_from(["wheel", "zip-sdist", "tar-sdist"]),
    zip_data=hostile_zips(),
    tar_data=hostile_tar_gzs(),
    name=st.sampled_from(["demo", "demo-hostile"]),
)
def test_upload_hostile_archives(
    farm: Farm, kind: str, zip_data: bytes, tar_data: bytes, name: str
) -> None:
    filename = {
        "wheel": f"{name.replace('-', '_')}-1.0-py3-none-any.whl",
        "zip-sdist": f"{name.replace('-', '_')}-1.0.zip",
        "tar-sdist": f"{name.replace('-', '_')}-1.0.tar.gz",
    }[kind]
    data = tar_data if kind == "tar-sdist" else zip_data
    response = upload_bytes(farm, filename, data)
    not_a_crash(response)
    assert_clean(farm)


# === names and versions in URLs and query strings ============================================

names_in_urls = st.one_of(
    valid_names,
    st.text(max_size=40),
    st.sampled_from(["..", ".", "%2e%2e", "a/b", "a\x00b", "x" * 500, "DEMO", "Demo_", " demo"]),
)


numbers_in_urls = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1]),
)


@examples(HTTP_EXAMPLES)
@example(name="a\x00b", version="1.0\x00", number=2**64)
@example(name="x" * 500, version="-1", number=-1)
@example(name="a\nb", version="9" * 30, number=2**31)
@given(
    name=names_in_urls,
    version=st.one_of(valid_versions, st.text(max_size=20)),
    number=numbers_in_urls,
)
def test_names_versions_and_numbers_in_urls(
    farm: Farm, name: str, version: str, number: int
) -> None:
    n, v = quote(name, safe=""), quote(version, safe="")
    read = farm.auth("read")
    sha = farm.wheel_url.split("/")[2]
    for url in (
        f"/{PLATFORM}/simple/{n}/",
        f"/{PLATFORM}/simple/{n}",
        f"/{PLATFORM}/files/{n}/{sha}/{n}-{v}.tar.gz",
        f"/files/{n}/{n}-{v}-py3-none-any.whl.metadata",
        f"/files/{sha}/{n}",
        f"/api/projects/{n}",
        f"/api/build-settings/{n}",
        f"/api/builds?project={n}&platform={n}&state={v}&limit={v}",
        f"/api/builds?limit={number}",
        f"/api/builds/{number}",
        f"/console/projects/{n}",
        f"/console/projects?q={n}",
        f"/console/builds?project={n}&state={v}",
        f"/console/builds/{number}",
        f"/console/builds/{farm.job_id}/log.json?offset={v}",
        f"/console/builds/{farm.job_id}/log.json?offset={number}",
        f"/{n}/simple/",
    ):
        not_a_crash(farm.client.get(url, headers=read))
    admin = farm.auth("admin")
    not_a_crash(farm.client.delete(f"/api/skips/{n}?version={v}", headers=admin))
    not_a_crash(farm.client.delete(f"/api/tokens/{number}", headers=admin))
    not_a_crash(farm.client.delete(f"/api/files/{abs(number) + 1000}", headers=admin))
    not_a_crash(farm.client.post(f"/api/files/{number}/yank", json={}, headers=admin))
    for path, body in (
        ("/api/skips", {"project": name, "version": version, "reason": name}),
        ("/api/builds", {"project": name, "version": version, "platforms": [PLATFORM]}),
        ("/api/tokens", {"scope": "read", "name": name}),
        (f"/api/builds/{farm.job_id}/cancel", {"reason": name}),
    ):
        not_a_crash(farm.client.post(path, json=body, headers=admin))
    not_a_crash(farm.client.put(f"/api/build-settings/{n}", json={}, headers=admin))


# === headers: Accept, Range, If-None-Match ===================================================

_header_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"),
    max_size=60,
)
_media = st.one_of(
    st.sampled_from(
        [
            V1_JSON,
            V1_HTML,
            "text/html",
            "application/vnd.pypi.simple.latest+json",
            "application/vnd.pypi.simple.latest+html",
            "application/vnd.pypi.simple.v2+json",
            "*/*",
            "application/*",
            "text/*",
            "*",
            "application/json",
            "image/png",
            "",
        ]
    ),
    _header_text,
)
_q = st.one_of(
    st.floats(min_value=-2, max_value=3).map(lambda f: f"{f:.3f}"),
    st.sampled_from(["nan", "inf", "-inf", "-1", "1.5", "abc", "", "0", "1e3", "0.0001", " 0.5"]),
)
_param = st.tuples(st.sampled_from(["q", "Q", "charset", "level", ""]), _q)
accept_headers = st.one_of(
    st.lists(
        st.builds(
            lambda m, ps: m + "".join(f";{k}={v}" for k, v in ps),
            _media,
            st.lists(_param, max_size=3),
        ),
        max_size=6,
    ).map(", ".join),
    _header_text,
)


@examples(HTTP_EXAMPLES)
@given(accept=accept_headers, format_param=st.one_of(st.none(), st.text(max_size=8)))
def test_accept_header(farm: Farm, accept: str, format_param: str | None) -> None:
    query = "" if format_param is None else "?format=" + quote(format_param, safe="")
    for url in (f"/{PLATFORM}/simple/", f"/{PLATFORM}/simple/demo/"):
        response = farm.client.get(url + query, headers={"Accept": accept})
        if "\x00" in (format_param or ""):  # refused before anything looks at it
            assert response.status_code == 400
            continue
        assert response.status_code in (200, 406), response.status_code
        if response.status_code == 200:
            assert response.mimetype in PAGE_TYPES
    not_a_crash(farm.client.get("/", headers={"Accept": accept}))


_position = st.one_of(
    st.integers(-3, 2000), st.integers(0, 2**70), st.sampled_from(["", "x", "1.5", "-", " 1"])
)
_range_spec = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", _position, _position),
    st.builds(lambda b: f"-{b}", _position),
    st.builds(lambda a: f"{a}-", _position),
    _header_text,
)
range_headers = st.one_of(
    st.builds(
        lambda unit, specs: f"{unit}={','.join(specs)}",
        st.sampled_from(["bytes", "bytes", "Bytes", "items", ""]),
        st.lists(_range_spec, min_size=1, max_size=4),
    ),
    _header_text,
)


@examples(HTTP_EXAMPLES)
@given(range_header=range_headers, if_range=st.one_of(st.none(), _header_text))
def test_range_header_on_files(farm: Farm, range_header: str, if_range: str | None) -> None:
    headers = {"Range": range_header}
    if if_range is not None:
        headers["If-Range"] = if_range
    response = farm.client.get(farm.wheel_url, headers=headers)
    assert response.status_code in (200, 206, 416), response.status_code
    body = response.get_data()
    if response.status_code == 200:
        assert body == farm.wheel
    elif response.status_code == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.headers["Content-Range"])
        assert match, response.headers["Content-Range"]
        start, end, total = map(int, match.groups())
        assert total == len(farm.wheel) and body == farm.wheel[start : end + 1]


@st.composite
def if_none_match_lists(draw: st.DrawFn, etags: list[str]) -> str:
    options = [*etags, *(t.strip('"') for t in etags), *(f"W/{t}" for t in etags), "*"]
    items = draw(st.lists(st.one_of(st.sampled_from(options), _header_text), max_size=5))
    return draw(st.sampled_from([", ", ",", " , "])).join(items)


@examples(HTTP_EXAMPLES)
@given(data=st.data())
def test_if_none_match_lists(farm: Farm, data: st.DataObject) -> None:
    for url, accept in (
        (f"/{PLATFORM}/simple/demo/", V1_JSON),
        (f"/{PLATFORM}/simple/", "text/html"),
        (farm.wheel_url, "*/*"),
    ):
        fresh = farm.client.get(url, headers={"Accept": accept})
        etag = fresh.headers["ETag"]
        header = data.draw(if_none_match_lists([etag]), label=url)
        response = farm.client.get(url, headers={"Accept": accept, "If-None-Match": header})
        assert response.status_code in (200, 304), response.status_code
        listed = [item.strip().removeprefix("W/") for item in header.split(",")]
        if etag in listed or header.strip() == "*":
            assert response.status_code == 304, header
        if response.status_code == 200:
            assert response.get_data() == fresh.get_data()


# === the upstream page parsers ===============================================================

_urls = st.one_of(
    st.sampled_from(
        [
            "https://files.example/demo-1.0.tar.gz",
            "../../packages/demo-1.0.tar.gz#sha256=" + "a" * 64,
            "http://[::1",  # an invalid IPv6 host
            "http://[garbage]/x",
            "javascript:alert(1)",
            "//other.example/x.whl",
            "",
            "#",
            "demo-1.0.tar.gz#sha256=",
            "demo-1.0.tar.gz#=x",
        ]
    ),
    st.text(max_size=40),
)
_file_entry = st.dictionaries(
    st.sampled_from(
        [
            "filename",
            "url",
            "hashes",
            "requires-python",
            "yanked",
            "core-metadata",
            "dist-info-metadata",
            "size",
            "upload-time",
        ]
    ),
    st.one_of(json_values, _urls),
    max_size=9,
)
json_pages = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda files, extra: json.dumps({"files": files, **extra}).encode(),
        st.one_of(st.lists(_file_entry, max_size=5), json_values),
        st.dictionaries(st.sampled_from(["meta", "name", "versions"]), json_values, max_size=3),
    ),
    st.binary(max_size=200),
)
page_urls = st.sampled_from(
    ["https://pypi.example/simple/demo/", "http://[::1]:8080/simple/demo/", "file:///x/", ""]
)


def _check_files(files: list[SimpleFile]) -> None:
    for f in files:
        assert isinstance(f.filename, str) and isinstance(f.url, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in f.hashes.items())
        assert f.requires_python is None or isinstance(f.requires_python, str)
        assert isinstance(f.yanked, bool | str)
        assert isinstance(f.core_metadata, bool | dict)
        assert f.size is None or isinstance(f.size, int)


@examples(PARSER_EXAMPLES)
@given(body=json_pages, page_url=page_urls)
def test_upstream_json_pages(body: bytes, page_url: str) -> None:
    try:
        files = parse_json_page(body, page_url)
    except UpstreamPageError:
        return
    _check_files(files)


_attr = st.tuples(
    st.sampled_from(
        [
            "href",
            "data-requires-python",
            "data-yanked",
            "data-core-metadata",
            "data-dist-info-metadata",
            "data-gpg-sig",
        ]
    ),
    st.one_of(st.none(), _urls),
)
_tag = st.one_of(
    st.builds(
        lambda attrs, text: (
            "<a " + " ".join(k if v is None else f'{k}="{v}"' for k, v in attrs) + f">{text}</a>"
        ),
        st.lists(_attr, max_size=4),
        st.text(max_size=20),
    ),
    st.builds(lambda href: f'<base href="{href}">', _urls),
    st.sampled_from(["<a>", "</a>", "<a href=x", "<!--", "<![CDATA[", "&#xffffffff;", "&amp"]),
    st.text(max_size=30),
)
html_pages = st.lists(_tag, max_size=10).map("".join)


@examples(PARSER_EXAMPLES)
@given(html=html_pages, page_url=page_urls)
def test_upstream_html_pages(html: str, page_url: str) -> None:
    _check_files(parse_html_page(html, page_url))


@examples(PARSER_EXAMPLES)
@given(
    body=st.one_of(json_pages, html_pages.map(str.encode), st.binary(max_size=100)),
    content_type=st.one_of(
        st.sampled_from(
            [V1_JSON, V1_HTML, "text/html; charset=utf-8", "application/json", "", ";;"]
        ),
        _header_text,
    ),
    page_url=page_urls,
)
def test_upstream_pages_of_any_type(body: bytes, content_type: str, page_url: str) -> None:
    try:
        files = parse_project_page(body, content_type, page_url)
    except UpstreamPageError:
        return
    _check_files(files)


# === the worker protocol, and the JSON bodies of the admin and worker APIs ===================

SCHEMAS = {
    name: getattr(protocol, name)
    for name in ("CLAIM", "JOB", "HEARTBEAT", "HEARTBEAT_REPLY", "LOG", "FINISH", "BUILD_SETTINGS")
}
_VALID = {
    "CLAIM": {"worker": "w1", "platforms": [PLATFORM], "runner": "podman"},
    "HEARTBEAT": {"lease": "a" * 32},
    "LOG": {"lease": "a" * 32, "text": "log"},
    "FINISH": {"lease": "a" * 32, "outcome": "failed", "error_category": "other"},
    "BUILD_SETTINGS": {"env": {"A": "1"}, "os_packages": ["libyaml-dev"]},
}


@st.composite
def protocol_messages(draw: st.DrawFn) -> tuple[str, object]:
    name = draw(st.sampled_from(sorted(SCHEMAS)))
    keys = tuple(SCHEMAS[name].get("properties", {}))
    base = dict(_VALID.get(name, {}))
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return name, draw(json_values)
    changes = draw(st.dictionaries(st.sampled_from(keys) if keys else st.text(), json_values))
    if kind == 1:
        base.update(changes)
    else:
        base = changes
    return name, base


@examples(PARSER_EXAMPLES)
@given(message=protocol_messages())
def test_worker_protocol_validation(message: tuple[str, object]) -> None:
    name, body = message
    try:
        result = protocol.validate(body, SCHEMAS[name])
    except protocol.ProtocolError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= 300
        return
    assert result is body and isinstance(result, dict)
    for key in SCHEMAS[name].get("required", ()):
        assert key in result


def _admin_endpoints(farm: Farm) -> list[tuple[str, str, tuple[str, ...]]]:
    job = farm.job_id
    return [
        ("POST", "/api/tokens", ("scope", "name")),
        ("POST", "/api/files/1/yank", ("reason",)),
        ("POST", "/api/files/1/unyank", ()),
        ("DELETE", "/api/files/999999", ()),
        ("DELETE", "/api/tokens/999999", ()),
        ("POST", "/api/builds", ("project", "version", "platforms")),
        ("POST", f"/api/builds/{job}/cancel", ("reason",)),
        ("POST", f"/api/builds/{job}/skip", ("reason",)),
        ("POST", f"/api/builds/{job}/rebuild", ()),
        ("POST", "/api/skips", ("project", "version", "reason")),
        ("PUT", "/api/build-settings/demo", ("constraints", "env", "os_packages", "build_command")),
    ]


def _worker_endpoints(farm: Farm) -> list[tuple[str, str, tuple[str, ...]]]:
    job = farm.job_id
    return [
        ("POST", "/api/worker/claim", ("worker", "platforms", "runner")),
        ("POST", f"/api/worker/jobs/{job}/heartbeat", ("lease",)),
        ("POST", f"/api/worker/jobs/{job}/log", ("lease", "text")),
        ("POST", f"/api/worker/jobs/{job}/finish", tuple(protocol.FINISH["properties"])),
    ]


@examples(HTTP_EXAMPLES * 2)
@given(data=st.data())
def test_admin_api_json_bodies(farm: Farm, data: st.DataObject) -> None:
    method, path, keys = data.draw(st.sampled_from(_admin_endpoints(farm)), label="endpoint")
    content_type, body = data.draw(json_bodies(keys), label="body")
    response = farm.client.open(
        path,
        method=method,
        data=body,
        headers={**farm.auth("admin"), "Content-Type": content_type},
    )
    not_a_crash(response)
    assert response.mimetype == "application/json"


@examples(HTTP_EXAMPLES * 2)
@given(data=st.data())
def test_worker_api_json_bodies(farm: Farm, data: st.DataObject) -> None:
    method, path, keys = data.draw(st.sampled_from(_worker_endpoints(farm)), label="endpoint")
    content_type, body = data.draw(json_bodies(keys), label="body")
    if data.draw(st.booleans(), label="claimable"):  # a plausible claim, to reach the queue
        content_type = "application/json"
        worker = data.draw(st.one_of(st.text(max_size=10), st.just("w\x00")), label="worker")
        body = json.dumps({"worker": worker, "platforms": [PLATFORM]}).encode()
        path = "/api/worker/claim"
    response = farm.client.open(
        path,
        method=method,
        data=body,
        headers={**farm.auth("build"), "Content-Type": content_type},
    )
    not_a_crash(response)


NUL, LONG = "a\x00b", "x" * 5000


@pytest.mark.parametrize(
    ("scope", "method", "path", "body"),
    [
        ("admin", "POST", "/api/tokens", {"scope": "read", "name": NUL}),
        ("admin", "POST", "/api/tokens", {"scope": "read", "name": LONG}),
        ("admin", "POST", "/api/skips", {"project": NUL, "reason": "r"}),
        ("admin", "POST", "/api/skips", {"project": "demo", "version": LONG, "reason": NUL}),
        ("admin", "POST", "/api/files/1/yank", {"reason": NUL}),
        ("admin", "POST", "/api/files/1/yank", {"reason": LONG}),
        ("admin", "POST", "/api/builds/JOB/cancel", {"reason": NUL}),
        ("admin", "POST", "/api/builds/JOB/skip", {"reason": LONG}),
        ("admin", "PUT", "/api/build-settings/demo", {"env": {"A": NUL}}),
        ("admin", "PUT", "/api/build-settings/" + "x" * 300, {}),
        (
            "upload",
            "POST",
            "/api/builds",
            {"project": NUL, "version": "1", "platforms": [PLATFORM]},
        ),
        (
            "upload",
            "POST",
            "/api/builds",
            {"project": LONG, "version": "1", "platforms": [PLATFORM]},
        ),
        ("build", "POST", "/api/worker/claim", {"worker": NUL, "platforms": [PLATFORM]}),
        ("build", "POST", "/api/worker/claim", {"worker": "w", "platforms": [PLATFORM, NUL]}),
    ],
)
def test_values_a_database_cannot_store(
    farm: Farm, scope: str, method: str, path: str, body: dict[str, Any]
) -> None:
    """NUL characters (PostgreSQL text cannot hold them) and over-long strings (its
    VARCHAR columns refuse them; SQLite takes both): refused or stored, never a 500."""
    path = path.replace("JOB", str(farm.job_id))
    response = farm.client.open(path, method=method, json=body, headers=farm.auth(scope))
    not_a_crash(response)
    yanked = farm.client.post("/api/files/1/unyank", headers=farm.auth("admin"))
    assert yanked.status_code == 200


@examples(UPLOAD_EXAMPLES)
@given(
    lease=st.one_of(st.text(max_size=70), st.just("\x00" * 20)),
    data=st.one_of(st.binary(max_size=100), st.just(build_zip([ZipMember(WHEEL_META, METADATA)]))),
    filename=st.one_of(
        st.sampled_from([WHEEL_NAME, SDIST_NAME, *NASTY_FILENAMES]), st.text(max_size=30)
    ),
)
def test_worker_wheel_upload_form(farm: Farm, lease: str, data: bytes, filename: str) -> None:
    response = farm.client.post(
        f"/api/worker/jobs/{farm.job_id}/wheels",
        data={"lease": lease, "content": (io.BytesIO(data), filename), "sha256_digest": lease},
        headers=farm.auth("build"),
        content_type="multipart/form-data",
    )
    not_a_crash(response, REFUSED)  # no lease matches: always refused
    assert_clean(farm)


def test_zip_reader_sees_metadata_only_at_the_top(farm: Farm) -> None:
    """The METADATA lookup ignores nested and escaping paths (which it never extracts)."""
    data = build_zip(
        [
            ZipMember(f"../{WHEEL_META}", METADATA),
            ZipMember(f"x/{WHEEL_META}", METADATA),
            ZipMember(f"/{WHEEL_META}", METADATA),
        ]
    )
    path = scratch_file(farm, WHEEL_NAME, data)
    with pytest.raises(InvalidDistribution, match=r"exactly one \.dist-info/METADATA, found 0"):
        read_core_metadata(path, parse_filename(WHEEL_NAME))
    assert zipfile.is_zipfile(path)
