"""The load test's requirements set: 40 packages, some hosted here, some only upstream.

Each package's newest release has one wheel the platform installs, of a chosen size (the one
a CI job downloads), and the package has a history of older releases with small files, so
that the project pages are as long as real ones: most list tens to a few hundred files, and
a few (like numpy's or botocore's on PyPI) thousands; upstream pages also list wheels of
other platforms, which the platform's page leaves out.

* **hosted** packages (a company's own, ``acme-*``) are uploaded to the index as binary
  wheels for the platform (``cp311-cp311-manylinux_2_17_x86_64``), with their sdists;
* **upstream** packages (``pub-*``) exist only on the local upstream (FakeUpstream): the
  index merges their pages and pulls their files through on first request.

Wheel payloads are random bytes (base64 text in a module, deflated: incompressible, as
real wheels mostly are), so the file sizes are what goes over the wire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import requests

from tests.factory import make_sdist, make_wheel
from tests.http_helpers import PIP_ACCEPT, upload_form
from tests.upstream_server import FakeUpstream, UpstreamFile

PLATFORM = "debian-12-py3.11-x86_64"
BINARY_TAG = "cp311-cp311-manylinux_2_17_x86_64"
PURE_TAG = "py3-none-any"
# Wheels of other platforms next to each binary release upstream: left out of the page.
FOREIGN_TAGS = (
    "cp310-cp310-manylinux_2_17_x86_64",
    "cp312-cp312-manylinux_2_17_x86_64",
    "cp311-cp311-win_amd64",
    "cp311-cp311-macosx_11_0_arm64",
)
NEW_VERSION = "2.0"
KB = 1024
MB = 1024 * 1024

# The newest wheel's size of each of the 40 packages, in bytes: a few small ones, most
# between 100 and 300 KiB, some around a megabyte and three of a few megabytes.
WHEEL_SIZES: tuple[int, ...] = (
    *(12 * KB, 25 * KB, 45 * KB),
    *(100 * KB + i * (200 * KB) // 27 for i in range(28)),
    *(500 * KB, 700 * KB, 900 * KB, 1 * MB + 200 * KB, 1 * MB + 500 * KB, 1 * MB + 800 * KB),
    *(2 * MB, 3 * MB, 4 * MB),
)
# Older releases, listed on the pages. Upstream, a binary package lists 6 files a release
# (sdist, our wheel, 4 others: its page lists about 6 x releases, numpy's ~3,000), a pure
# one 2 (botocore: ~1,200 releases). Hosted ones: the sdist and wheel uploaded each time.
BINARY_RELEASES = (4, 8, 10, 15, 18, 20, 25, 30, 40, 60, 100, 400)
PURE_RELEASES = (6, 10, 12, 20, 30, 35, 50, 70, 100, 200, 500, 1200)
HOSTED_RELEASES = (2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25, 30)

# pip's request headers: an index page (pip's collector, requests' Accept-Encoding, and the
# Cache-Control pip adds to page requests), and a download (.metadata or a file: pip asks
# for the bytes as stored, never a compressed transfer).
PIP_USER_AGENT = 'pip/25.3 {"installer":{"name":"pip","version":"25.3"},"python":"3.11.2"}'
PAGE_HEADERS = {
    "Accept": PIP_ACCEPT,
    "Accept-Encoding": "gzip, deflate",
    "Cache-Control": "max-age=0",
    "User-Agent": PIP_USER_AGENT,
}
DOWNLOAD_HEADERS = {"Accept-Encoding": "identity", "User-Agent": PIP_USER_AGENT}


@dataclass(frozen=True)
class Package:
    name: str
    hosted: bool
    pure: bool  # a py3-none-any wheel; else a cp311 binary wheel
    wheel_size: int  # the size asked for; the real size is close
    releases: int = 3  # older releases, with small files, listed on the page

    @property
    def tag(self) -> str:
        return PURE_TAG if self.pure else BINARY_TAG

    @property
    def wheel_filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{NEW_VERSION}-{self.tag}.whl"

    def old_versions(self) -> list[str]:
        return [f"1.{i // 10}.{i % 10}" for i in range(self.releases)]


@dataclass(frozen=True)
class StormTarget:
    """What a client fetches for one package: the page, then the wheel's metadata and bytes."""

    package: Package
    page: str  # URL paths on the index
    metadata: str
    wheel: str
    wheel_bytes: int
    metadata_bytes: int
    page_files: int  # files the platform's page lists


def requirement_set(count: int = 40, max_releases: int | None = None) -> list[Package]:
    """``count`` packages: 2 in 5 hosted (binary wheels), the rest upstream (half pure).

    ``max_releases`` caps the older releases (short pages; see --max-releases).
    """
    shuffle = random.Random(7)
    sizes = [WHEEL_SIZES[i % len(WHEEL_SIZES)] for i in range(count)]
    shuffle.shuffle(sizes)  # sizes independent of the kind of package
    pools = {
        "hosted": list(HOSTED_RELEASES),
        "binary": list(BINARY_RELEASES),
        "pure": list(PURE_RELEASES),
    }
    for pool in pools.values():
        shuffle.shuffle(pool)
    packages = []
    for i, size in enumerate(sizes):
        hosted = i % 5 in (0, 3)
        pure = not hosted and i % 2 == 0
        kind = "hosted" if hosted else "pure" if pure else "binary"
        releases = pools[kind].pop(0)
        pools[kind].append(releases)  # more packages than history lengths: reuse in turn
        if max_releases is not None:
            releases = min(releases, max_releases)
        name = f"acme-lib-{i:02d}" if hosted else f"pub-lib-{i:02d}"
        packages.append(Package(name, hosted, pure, size, releases))
    return packages


# ---------------------------------------------------------------------------------------
# Making the files


def payload_module(size: int, seed: str) -> dict[str, str]:
    """A module whose deflated size is about ``size`` bytes (base64 of random bytes)."""
    raw = random.Random(seed).randbytes(max(256, size - 700))
    return {"_payload.py": f'DATA = "{base64.b64encode(raw).decode()}"\n'}


def make_sized_wheel(
    directory: Path, name: str, version: str, tag: str, size: int, requires: tuple[str, ...] = ()
) -> Path:
    module = name.replace("-", "_")
    modules = {
        f"{module}/__init__.py": f'__version__ = "{version}"\n',
        **{f"{module}/{k}": v for k, v in payload_module(size, f"{name}-{version}").items()},
    }
    return make_wheel(directory, name, version, tag=tag, requires=requires, modules=modules)


def hosted_files(package: Package, directory: Path) -> list[Path]:
    """What a company's CI uploaded over time: sdist and wheel of each release."""
    files = []
    for version in package.old_versions():
        files.append(make_sdist(directory, package.name, version))
        files.append(make_sized_wheel(directory, package.name, version, package.tag, 4 * KB))
    files.append(make_sdist(directory, package.name, NEW_VERSION))
    files.append(
        make_sized_wheel(directory, package.name, NEW_VERSION, package.tag, package.wheel_size)
    )
    return files


def _tiny(filename: str) -> UpstreamFile:
    """A file only listed (never downloaded in the test): a few bytes, no metadata."""
    return UpstreamFile(filename, hashlib.sha256(filename.encode()).digest() * 32, None)


def add_upstream_package(upstream: FakeUpstream, package: Package, directory: Path) -> None:
    dist = package.name.replace("-", "_")
    others = () if package.pure else FOREIGN_TAGS
    listed = []
    for version in [*package.old_versions(), NEW_VERSION]:
        listed.append(_tiny(f"{dist}-{version}.tar.gz"))
        tags = others if version == NEW_VERSION else (package.tag, *others)
        listed += [_tiny(f"{dist}-{version}-{tag}.whl") for tag in tags]
    upstream.projects[package.name] = listed
    wheel = make_sized_wheel(directory, package.name, NEW_VERSION, package.tag, package.wheel_size)
    upstream.add(wheel)


# ---------------------------------------------------------------------------------------
# Uploading (as twine does) and warming the cache


def post_upload(
    session: requests.Session, server_url: str, token: str, path: Path, timeout: float = 60
) -> requests.Response:
    """One multipart upload to the platform's legacy API, with the fields twine sends."""
    form = upload_form(path)
    handle, filename, mimetype = form.pop("content")
    with handle:
        return session.post(
            f"{server_url}/{PLATFORM}/legacy/",
            data=form,
            files={"content": (filename, handle, mimetype)},
            auth=("__token__", token),
            timeout=timeout,
        )


def upload_all(server_url: str, token: str, files: list[Path]) -> None:
    with requests.Session() as session:
        for path in files:
            response = post_upload(session, server_url, token, path)
            if response.status_code != 201:
                raise SystemExit(f"upload of {path.name}: HTTP {response.status_code}")


def prepare_set(
    packages: list[Package], upstream: FakeUpstream, server_url: str, token: str, work: Path
) -> float:
    """Upload the hosted packages, put the others on the upstream; seconds it took."""
    started = time.monotonic()
    directory = work / "set"
    directory.mkdir(parents=True, exist_ok=True)
    uploads: list[Path] = []
    for package in packages:
        if package.hosted:
            uploads += hosted_files(package, directory)
        else:
            add_upstream_package(upstream, package, directory)
    upload_all(server_url, token, uploads)
    return time.monotonic() - started


def _fetch(session: requests.Session, url: str, headers: dict[str, str]) -> bytes:
    response = session.get(url, headers=headers, timeout=60, allow_redirects=False)
    if response.status_code != 200:
        raise SystemExit(f"warm-up: GET {url}: HTTP {response.status_code} {response.text[:300]}")
    return response.content


def warm_target(session: requests.Session, server_url: str, package: Package) -> StormTarget:
    """Fetch the page, the wheel's .metadata and the wheel once, checking each as pip would."""
    page_path = f"/{PLATFORM}/simple/{package.name}/"
    page = json.loads(_fetch(session, server_url + page_path, PAGE_HEADERS))
    entries = {f["filename"]: f for f in page["files"]}
    entry = entries.get(package.wheel_filename)
    if entry is None:
        raise SystemExit(f"{package.name}: {package.wheel_filename} not on {page_path}")
    foreign = [n for n in entries if any(t in n for t in FOREIGN_TAGS)]
    if foreign:
        raise SystemExit(f"{package.name}: wheels of other platforms listed: {foreign}")
    if not entry.get("core-metadata"):
        raise SystemExit(f"{package.name}: no PEP 658 metadata for {package.wheel_filename}")
    wheel_path = urldefrag(urljoin(page_path, entry["url"])).url
    metadata = _fetch(session, server_url + wheel_path + ".metadata", DOWNLOAD_HEADERS)
    if hashlib.sha256(metadata).hexdigest() != entry["core-metadata"]["sha256"]:
        raise SystemExit(f"{package.name}: .metadata does not match its digest")
    wheel = _fetch(session, server_url + wheel_path, DOWNLOAD_HEADERS)
    if hashlib.sha256(wheel).hexdigest() != entry["hashes"]["sha256"]:
        raise SystemExit(f"{package.name}: the wheel does not match its sha256")
    return StormTarget(
        package,
        page_path,
        wheel_path + ".metadata",
        wheel_path,
        len(wheel),
        len(metadata),
        len(entries),
    )


def warm_cache(server_url: str, packages: list[Package]) -> list[StormTarget]:
    """Every page, .metadata and wheel once through the index (pulls upstream ones through)."""
    with requests.Session() as session:
        return [warm_target(session, server_url, p) for p in packages]
