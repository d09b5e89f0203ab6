"""End-to-end tests with real clients (twine, pip, uv, pypi-simple) against a real server.

One ``wheelfarm serve`` (gunicorn) serves the whole module; every test uses its own project
names, so the tests do not depend on each other's uploads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from packaging.utils import canonicalize_name
from pypi_simple import (
    ACCEPT_HTML_ONLY,
    ACCEPT_JSON_ONLY,
    DigestMismatchError,
    DistributionPackage,
    NoSuchProjectError,
    PyPISimple,
)

from tests.client_helpers import (
    MIN_PIP,
    CountingProxy,
    api,
    file_id,
    flat_output,
    fresh_venv,
    pip,
    pip_version,
    raw_get,
    twine_upload,
    uv,
)
from tests.conftest import LiveServer, start_server, stop_server
from tests.factory import make_sdist, make_wheel

DEBIAN = "debian-12-py3.11-x86_64"  # the platform of this machine's Python
UBUNTU = "ubuntu-22.04-py3.10-x86_64"
HTML_CT = "application/vnd.pypi.simple.v1+html"
JSON_CT = "application/vnd.pypi.simple.v1+json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name)


@pytest.fixture(scope="module", autouse=True)
def _current_pip() -> None:
    assert pip_version() >= MIN_PIP, (
        f"these tests need pip >= {MIN_PIP} in the test venv (found {pip_version()}): "
        "older pips download wheels during --dry-run and lack metadata checks"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("client-server")
    live = start_server(root / "data", root / "server.log")
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def token(server: LiveServer) -> str:
    return server.token("upload")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dists")


@pytest.fixture(scope="module")
def published(server: LiveServer, token: str, dists: Path) -> dict[str, Path]:
    """Hello_World 1.0 (needs dep-pkg>=1) and dep-pkg 1.0 (wheel and sdist), via twine."""
    files = {
        "hello": make_wheel(
            dists,
            "Hello_World",
            "1.0",
            requires=["dep-pkg>=1"],
            modules={"hello_world/__init__.py": "from dep_pkg import VALUE\n"},
        ),
        "dep": make_wheel(
            dists, "dep-pkg", "1.0", modules={"dep_pkg/__init__.py": "VALUE = 'dep 1.0'\n"}
        ),
        "dep_sdist": make_sdist(dists, "dep-pkg", "1.0"),
        "other": make_wheel(dists, "other.pkg", "0.1"),
    }
    result = twine_upload(server.url, DEBIAN, token, files.values())
    for path in files.values():
        assert f"Uploading {path.name}" in result.stdout
    listing = api(server.url, "GET", "/api/projects/dep-pkg")
    assert isinstance(listing, dict)
    stored = {f["filename"]: f["sha256"] for f in listing["files"]}
    assert stored == {p.name: sha256(p) for p in (files["dep"], files["dep_sdist"])}
    return files


# 1. twine upload, then pip install / pip download / uv pip install


def test_twine_upload_is_idempotent_and_refuses_changed_bytes(
    server: LiveServer, token: str, published: dict[str, Path], tmp_path: Path
) -> None:
    again = twine_upload(server.url, DEBIAN, token, [published["dep"]])
    assert "Uploading dep_pkg-1.0-py3-none-any.whl" in again.stdout
    # Same filename, other bytes: files are immutable.
    changed = make_wheel(tmp_path, "dep-pkg", "1.0", modules={"dep_pkg/__init__.py": "X = 2\n"})
    assert changed.name == published["dep"].name
    refused = twine_upload(server.url, DEBIAN, token, [changed], check=False)
    assert refused.returncode != 0
    output = flat_output(refused)
    assert "HTTPError: 409" in output
    assert "dep_pkg-1.0-py3-none-any.whl already exists with different content" in output


def test_pip_installs_package_with_dependency(
    server: LiveServer, published: dict[str, Path], tmp_path: Path
) -> None:
    venv = fresh_venv(tmp_path / "venv")
    result = pip("install", "--index-url", server.index(DEBIAN), "hello-world", python=venv.python)
    # pip resolved through the PEP 658 metadata files, then downloaded the two wheels.
    assert "hello_world-1.0-py3-none-any.whl.metadata" in result.stdout
    assert "dep_pkg-1.0-py3-none-any.whl.metadata" in result.stdout
    assert "Successfully installed dep-pkg-1.0 hello-world-1.0" in result.stdout
    assert venv.check_import("import hello_world; print(hello_world.VALUE)") == "dep 1.0\n"


def test_pip_download_gets_the_uploaded_bytes(
    server: LiveServer, published: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "downloads"
    pip("download", "--index-url", server.index(DEBIAN), "--dest", out, "hello-world")
    downloaded = {p.name: sha256(p) for p in out.iterdir()}
    assert downloaded == {p.name: sha256(p) for p in (published["hello"], published["dep"])}


def test_uv_pip_install(server: LiveServer, published: dict[str, Path], tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path / "venv")
    result = uv(
        "pip",
        "install",
        "--python",
        venv.python,
        "--default-index",
        server.index(DEBIAN),
        "Hello_World",
        "other.pkg",
        cache_dir=tmp_path / "uv-cache",
    )
    for line in ("+ dep-pkg==1.0", "+ hello-world==1.0", "+ other-pkg==0.1"):
        assert line in result.stderr
    assert venv.check_import("import hello_world, other_pkg; print(hello_world.VALUE)") == (
        "dep 1.0\n"
    )


# 2. Yanked files (PEP 592): skipped unless pinned exactly


@pytest.fixture(scope="module")
def yanked(server: LiveServer, token: str, dists: Path) -> str:
    """yank-me 1.0 and 2.0, with 2.0 yanked through the admin API; returns the reason."""
    files = [make_wheel(dists, "yank-me", version) for version in ("1.0", "2.0")]
    twine_upload(server.url, DEBIAN, token, files)
    reason = "broken <build> & bad"
    target = file_id(server.url, "yank-me", "yank_me-2.0-py3-none-any.whl")
    answer = api(server.url, "POST", f"/api/files/{target}/yank", {"reason": reason})
    assert isinstance(answer, dict)
    assert (answer["yanked"], answer["yanked_reason"]) == (True, reason)
    return reason


def test_yanked_file_with_pip(server: LiveServer, yanked: str, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path / "venv")
    index = ["--index-url", server.index(DEBIAN)]
    unpinned = pip("install", *index, "yank-me", python=venv.python)
    assert "Successfully installed yank-me-1.0" in unpinned.stdout
    assert "yanked version" not in flat_output(unpinned)
    assert venv.check_import("import yank_me; print(yank_me.__version__)") == "1.0\n"

    pinned = pip("install", *index, "yank-me==2.0", python=venv.python)
    assert "Successfully installed yank-me-2.0" in pinned.stdout
    warning = flat_output(pinned)
    assert "The candidate selected for download or install is a yanked version" in warning
    assert f"Reason for being yanked: {yanked}" in warning
    assert venv.check_import("import yank_me; print(yank_me.__version__)") == "2.0\n"


def test_yanked_file_with_uv(server: LiveServer, yanked: str, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path / "venv")
    common: list[str | Path] = ["--python", venv.python, "--default-index", server.index(DEBIAN)]
    cache = tmp_path / "uv-cache"
    unpinned = uv("pip", "install", *common, "yank-me", cache_dir=cache)
    assert "+ yank-me==1.0" in unpinned.stderr
    assert "is yanked" not in unpinned.stderr
    pinned = uv("pip", "install", *common, "yank-me==2.0", cache_dir=cache)
    assert "+ yank-me==2.0" in pinned.stderr
    assert f'warning: `yank-me==2.0` is yanked (reason: "{yanked}")' in pinned.stderr
    assert venv.check_import("import yank_me; print(yank_me.__version__)") == "2.0\n"


def test_unyank_with_basic_auth_makes_pip_pick_the_newest_again(
    server: LiveServer, token: str, dists: Path, tmp_path: Path
) -> None:
    files = [make_wheel(dists, "unyank-me", version) for version in ("1.0", "2.0")]
    twine_upload(server.url, DEBIAN, token, files)
    target = file_id(server.url, "unyank-me", "unyank_me-2.0-py3-none-any.whl")
    api(server.url, "POST", f"/api/files/{target}/yank", {"reason": "oops"}, basic_auth=True)
    report = tmp_path / "report.json"
    args: list[str | Path] = ["install", "--dry-run", "--ignore-installed", "--report", report]
    pip(*args, "--index-url", server.index(DEBIAN), "unyank-me")
    assert [i["metadata"]["version"] for i in json.loads(report.read_text())["install"]] == ["1.0"]
    answer = api(server.url, "POST", f"/api/files/{target}/unyank", basic_auth=True)
    assert isinstance(answer, dict) and answer["yanked"] is False
    pip(*args, "--index-url", server.index(DEBIAN), "unyank-me")
    assert [i["metadata"]["version"] for i in json.loads(report.read_text())["install"]] == ["2.0"]


# 3. Requires-Python (PEP 503 data-requires-python, PEP 691 requires-python)


def test_requires_python_excluding_this_python(
    server: LiveServer, token: str, dists: Path, tmp_path: Path
) -> None:
    files = [
        make_wheel(dists, "rp-pkg", "1.0", requires_python=">=3.8"),
        make_wheel(dists, "rp-pkg", "2.0", requires_python=">=3.8,<4"),
        make_wheel(dists, "rp-pkg", "3.0", requires_python=">=3.99"),
    ]
    twine_upload(server.url, DEBIAN, token, files)

    html = raw_get(server.index(DEBIAN) + "rp-pkg/", {"Accept": HTML_CT})
    assert html.headers["Content-Type"].startswith(HTML_CT)
    body = html.body.decode()
    assert re.findall(r'data-requires-python="([^"]*)"', body) == [
        "&gt;=3.8",
        "&gt;=3.8,&lt;4",
        "&gt;=3.99",
    ]
    page = json.loads(raw_get(server.index(DEBIAN) + "rp-pkg/", {"Accept": JSON_CT}).body)
    assert {f["filename"]: f["requires-python"] for f in page["files"]} == {
        "rp_pkg-1.0-py3-none-any.whl": ">=3.8",
        "rp_pkg-2.0-py3-none-any.whl": ">=3.8,<4",
        "rp_pkg-3.0-py3-none-any.whl": ">=3.99",
    }

    venv = fresh_venv(tmp_path / "venv")
    result = pip("install", "--index-url", server.index(DEBIAN), "rp-pkg", python=venv.python)
    assert "Successfully installed rp-pkg-2.0" in result.stdout
    refused = pip(
        "install",
        "--index-url",
        server.index(DEBIAN),
        "rp-pkg==3.0",
        python=venv.python,
        check=False,
    )
    assert refused.returncode != 0
    assert "Requires-Python >=3.99" in flat_output(refused)

    uv_venv = fresh_venv(tmp_path / "uv-venv")
    installed = uv(
        "pip",
        "install",
        "--python",
        uv_venv.python,
        "--default-index",
        server.index(DEBIAN),
        "rp-pkg",
        cache_dir=tmp_path / "uv-cache",
    )
    assert "+ rp-pkg==2.0" in installed.stderr


# 4. pypi-simple reads both serializations and verifies file and metadata digests


def _packages(server: LiveServer, accept: str, project: str) -> list[DistributionPackage]:
    with PyPISimple(server.index(DEBIAN), accept=accept) as client:
        index = client.get_index_page()
        assert index.repository_version == "1.1"
        assert canonicalize_name(project) in {canonicalize_name(p) for p in index.projects}
        page = client.get_project_page(project)
    assert page.repository_version == "1.1"
    return page.packages


@pytest.mark.parametrize("accept", [ACCEPT_JSON_ONLY, ACCEPT_HTML_ONLY], ids=["json", "html"])
def test_pypi_simple_verifies_files_and_metadata(
    server: LiveServer, published: dict[str, Path], yanked: str, accept: str, tmp_path: Path
) -> None:
    packages = {p.filename: p for p in _packages(server, accept, "DEP_pkg")}
    wheel, sdist = published["dep"], published["dep_sdist"]
    assert set(packages) == {wheel.name, sdist.name}
    with PyPISimple(server.index(DEBIAN), accept=accept) as client:
        for path in (wheel, sdist):
            pkg = packages[path.name]
            assert pkg.digests == {"sha256": sha256(path)}
            assert canonicalize_name(pkg.project or "") == "dep-pkg"
            assert (pkg.version, pkg.is_yanked) == ("1.0", False)
            client.download_package(pkg, tmp_path / path.name, verify=True)
            assert (tmp_path / path.name).read_bytes() == path.read_bytes()
            # The check is real: a wrong digest is caught and the file is not kept.
            bad = dataclasses.replace(pkg, digests={"sha256": "0" * 64})
            with pytest.raises(DigestMismatchError):
                client.download_package(bad, tmp_path / "bad" / path.name, verify=True)
            assert not (tmp_path / "bad" / path.name).exists()

        pkg = packages[wheel.name]
        metadata = wheel_metadata(wheel)
        assert pkg.has_metadata is True
        assert pkg.metadata_digests == {"sha256": hashlib.sha256(metadata).hexdigest()}
        assert client.get_package_metadata_bytes(pkg, verify=True) == metadata
        assert client.get_package_metadata(pkg, verify=True) == metadata.decode()
        bad = dataclasses.replace(pkg, metadata_digests={"sha256": "0" * 64})
        with pytest.raises(DigestMismatchError):
            client.get_package_metadata(bad, verify=True)
        assert not packages[sdist.name].has_metadata

        yank_page = {p.filename: p for p in client.get_project_page("yank-me").packages}
    assert (yank_page["yank_me-2.0-py3-none-any.whl"].yanked_reason) == yanked
    assert yank_page["yank_me-1.0-py3-none-any.whl"].is_yanked is False
    if accept == ACCEPT_JSON_ONLY:  # PEP 700 fields exist only in JSON
        assert packages[wheel.name].size == wheel.stat().st_size
        assert packages[wheel.name].upload_time is not None


def test_pypi_simple_html_and_json_agree(server: LiveServer, published: dict[str, Path]) -> None:
    def summary(accept: str) -> list[tuple[object, ...]]:
        return sorted(
            (p.filename, p.url, p.digests, p.requires_python, p.yanked_reason, p.metadata_digests)
            for p in _packages(server, accept, "hello-world")
        )

    assert summary(ACCEPT_JSON_ONLY) == summary(ACCEPT_HTML_ONLY)


# 5. pip resolves through .metadata without downloading wheels (counted at a proxy)


def test_dry_run_resolution_fetches_metadata_not_wheels(
    server: LiveServer, published: dict[str, Path], tmp_path: Path
) -> None:
    venv = fresh_venv(tmp_path / "venv")
    with CountingProxy(server.url) as proxy:
        result = pip(
            "install",
            "--dry-run",
            "--quiet",
            "--report",
            "-",
            "--index-url",
            f"{proxy.url}/{DEBIAN}/simple/",
            "hello-world",
            python=venv.python,
        )
        report = json.loads(result.stdout)
        assert sorted(
            (i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"]
        ) == [("Hello_World", "1.0"), ("dep-pkg", "1.0")]
        assert {i["download_info"]["url"].rsplit("/", 1)[1] for i in report["install"]} == {
            published["hello"].name,
            published["dep"].name,
        }
        paths = proxy.paths()
        wheels = [p for p in paths if p.endswith(".whl")]
        metadata = [p for p in paths if p.endswith(".whl.metadata")]
        assert wheels == []
        assert sorted(p.rsplit("/", 1)[1] for p in metadata) == sorted(
            f"{published[k].name}.metadata" for k in ("hello", "dep")
        )
        # pip asked for JSON first, and got JSON pages.
        pages = [r for r in proxy.requests if "/simple/" in r.path]
        assert pages and all(r.content_type == JSON_CT and r.status == 200 for r in pages)
        assert all(r.accept.startswith(JSON_CT) for r in pages)

        # `pip lock` (pylock.toml) resolves the same way, with the index's hashes.
        before = len(proxy.requests)
        lock = tmp_path / "pylock.toml"
        pip("lock", "--index-url", f"{proxy.url}/{DEBIAN}/simple/", "-o", lock, "hello-world")
        locked = tomllib.loads(lock.read_text())
        hashes = {w["name"]: w["hashes"]["sha256"] for p in locked["packages"] for w in p["wheels"]}
        assert hashes == {published[k].name: sha256(published[k]) for k in ("hello", "dep")}
        assert [p for p in proxy.paths()[before:] if p.endswith(".whl")] == []

        # Control: a real install through the same proxy is seen downloading both wheels.
        before = len(proxy.requests)
        pip(
            "install",
            "--index-url",
            f"{proxy.url}/{DEBIAN}/simple/",
            "hello-world",
            python=venv.python,
        )
        downloaded = [p.rsplit("/", 1)[1] for p in proxy.paths()[before:] if p.endswith(".whl")]
        assert sorted(downloaded) == sorted(published[k].name for k in ("dep", "hello"))


def test_uv_dry_run_fetches_metadata_not_wheels(
    server: LiveServer, published: dict[str, Path], tmp_path: Path
) -> None:
    venv = fresh_venv(tmp_path / "venv")
    with CountingProxy(server.url) as proxy:
        result = uv(
            "pip",
            "install",
            "--dry-run",
            "--python",
            venv.python,
            "--default-index",
            f"{proxy.url}/{DEBIAN}/simple/",
            "hello-world",
            cache_dir=tmp_path / "uv-cache",
        )
        assert "+ dep-pkg==1.0" in result.stderr and "+ hello-world==1.0" in result.stderr
        paths = proxy.paths() + proxy.paths("HEAD")
        assert [p for p in paths if p.endswith(".whl")] == []
        assert len([p for p in paths if p.endswith(".whl.metadata")]) == 2
        pages = [r for r in proxy.requests if "/simple/" in r.path]
        assert pages and all(r.content_type == JSON_CT for r in pages)


# 6. Redirects and non-normalized names


def test_non_normalized_names(
    server: LiveServer, published: dict[str, Path], tmp_path: Path
) -> None:
    base = server.index(DEBIAN)
    for path in ("Hello_World/", "hello-world", "HELLO.world"):
        response = raw_get(base + path)
        assert response.status == 301, (path, response.status)
        assert urljoin(base + path, response.headers["Location"]) == base + "hello-world/"
    root = raw_get(base.rstrip("/"))
    assert root.status == 301
    assert urljoin(base, root.headers["Location"]) == base

    venv = fresh_venv(tmp_path / "venv")
    result = pip("install", "--index-url", base, "HELLO.World", python=venv.python)
    assert "Successfully installed HELLO.World-1.0 dep-pkg-1.0" in result.stdout
    assert venv.check_import("import hello_world; print(hello_world.VALUE)") == "dep 1.0\n"


# 7. Binary wheels belong to one platform's index


def test_platform_separation(
    server: LiveServer, token: str, dists: Path, published: dict[str, Path], tmp_path: Path
) -> None:
    assert sys.version_info[:2] == (3, 11), "the debian-12 platform is CPython 3.11"
    binary = make_wheel(dists, "bin-pkg", "1.0", tag="cp311-cp311-linux_x86_64")
    refused = twine_upload(server.url, UBUNTU, token, [binary], check=False)
    assert refused.returncode != 0
    output = flat_output(refused)
    assert "HTTPError: 400" in output
    assert f"{binary.name} cannot be installed on platform {UBUNTU}" in output
    twine_upload(server.url, DEBIAN, token, [binary])

    venv = fresh_venv(tmp_path / "venv")
    result = pip("install", "--index-url", server.index(DEBIAN), "bin-pkg", python=venv.python)
    assert "Successfully installed bin-pkg-1.0" in result.stdout
    assert venv.check_import("import bin_pkg; print(bin_pkg.__version__)") == "1.0\n"

    with PyPISimple(server.index(UBUNTU), accept=ACCEPT_JSON_ONLY) as client:
        ubuntu_projects = {canonicalize_name(p) for p in client.get_index_page().projects}
        try:
            ubuntu_files = client.get_project_page("bin-pkg").packages
        except NoSuchProjectError:
            ubuntu_files = []
    assert "bin-pkg" not in ubuntu_projects
    assert ubuntu_files == []
    assert "hello-world" in ubuntu_projects  # pure wheels are on every platform
    # This Python could install a cp311 wheel: pip failing proves the file is not listed.
    other = fresh_venv(tmp_path / "other")
    missing = pip(
        "install",
        "--index-url",
        server.index(UBUNTU),
        "bin-pkg",
        python=other.python,
        check=False,
    )
    assert missing.returncode != 0
    assert "No matching distribution found for bin-pkg" in flat_output(missing)
