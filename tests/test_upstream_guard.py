"""What an upstream cannot make the server do (issue 15, the Low findings).

An upstream's page or redirect may point the server at another host; one that is not
public (loopback, private, link-local: the cloud's metadata service) is refused with a
one-line 502 and never contacted, unless it is named in ``upstream_allowed_hosts``. A
file larger than ``upstream_max_file_bytes`` is refused, and a refused file leaves
nothing behind. A hash mismatch never tells the client the digest of what was fetched.

The upstream is ``http://127.0.0.1:<port>/``; the "internal" host is a second local server
reached as ``localhost``: loopback too, but not the upstream's host.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from flask.testing import FlaskClient

from index_server.app import create_app
from index_server.config import Settings
from index_server.services import Services
from tests.factory import make_wheel
from tests.fault_helpers import CHUNKED, FaultyUpstream
from tests.test_upstream_faults import (
    PLATFORM,
    assert_refused,
    assert_store_holds_only,
    cached_page,
    entry_for,
    make_proxy,
)

PROJECT = "libguard"
PAGE = f"/simple/{PROJECT}/"
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
REFUSED = "not a public address"


@pytest.fixture(params=["json", "html"])
def upstream(request: pytest.FixtureRequest) -> Iterator[FaultyUpstream]:
    fake = FaultyUpstream(mode=request.param)
    yield fake
    fake.close()


@pytest.fixture
def internal() -> Iterator[FaultyUpstream]:
    """A service on loopback the upstream points at; it holds the same project and files,
    so a fetch that reached it would succeed."""
    fake = FaultyUpstream(mode="json")
    yield fake
    fake.close()


def internal_base(internal: FaultyUpstream) -> str:
    return f"http://localhost:{urlsplit(internal.url).port}"


def fill(tmp_path: Path, *upstreams: FaultyUpstream) -> bytes:
    (tmp_path / "dists").mkdir(exist_ok=True)
    wheel = make_wheel(tmp_path / "dists", PROJECT, "1.0")
    for each in upstreams:
        each.add(wheel)
    return wheel.read_bytes()


def page(client: FlaskClient):  # type: ignore[no-untyped-def]
    return client.get(f"/{PLATFORM}/simple/{PROJECT}/", headers=JSON)


def wheel_path(client: FlaskClient) -> tuple[str, str]:
    """(the proxy's URL of the wheel, its filename), from the proxy's page."""
    response = page(client)
    assert response.status_code == 200, response.text
    entry = entry_for(response.json, ".whl")  # type: ignore[arg-type]
    return urljoin(f"/{PLATFORM}/simple/{PROJECT}/", entry["url"]), entry["filename"]


@pytest.fixture
def proxy(tmp_path: Path, upstream: FaultyUpstream) -> Iterator[Services]:
    services = make_proxy(tmp_path, upstream)
    yield services
    services.engine.dispose()


# --- (a) a page's file link to a non-public host -----------------------------------------


def test_a_file_link_to_a_non_public_host_is_refused_and_never_fetched(
    proxy: Services, upstream: FaultyUpstream, internal: FaultyUpstream, tmp_path: Path
) -> None:
    fill(tmp_path, upstream, internal)
    upstream.files_url = internal_base(internal) + "/files/"
    client = create_app(services=proxy).test_client()
    url, _filename = wheel_path(client)
    response = client.get(url)
    assert_refused(response, REFUSED, "localhost", statuses=(502,))
    if upstream.mode == "json":  # the JSON page announces the wheel's metadata too
        assert_refused(client.get(url + ".metadata"), REFUSED, statuses=(502,))
    assert_store_holds_only(proxy)
    assert internal.count("/") == 0
    assert upstream.count("/files/") == 0


# --- (b) a redirect to a non-public host ---------------------------------------------------


@pytest.mark.parametrize("hops", [1, 2])
def test_a_file_redirect_to_a_non_public_host_is_refused_and_never_followed(
    proxy: Services,
    upstream: FaultyUpstream,
    internal: FaultyUpstream,
    tmp_path: Path,
    hops: int,
) -> None:
    """One 302 straight to the internal host, or a relative 302 on the upstream (allowed,
    followed) and then one to the internal host: every hop is checked."""
    fill(tmp_path, upstream, internal)
    client = create_app(services=proxy).test_client()
    url, filename = wheel_path(client)
    target = f"{internal_base(internal)}/files/{filename}"
    if hops == 1:
        upstream.redirects[f"/files/{filename}"] = target
    else:
        upstream.redirects[f"/files/{filename}"] = f"/moved/{filename}"
        upstream.redirects[f"/moved/{filename}"] = target
    response = client.get(url)
    assert_refused(response, REFUSED, "localhost", statuses=(502,))
    assert upstream.count(f"/files/{filename}") == 1
    assert upstream.count("/moved/") == (1 if hops == 2 else 0)
    assert internal.count("/") == 0
    assert_store_holds_only(proxy)


def test_a_page_redirect_to_a_non_public_host_is_refused_and_never_followed(
    proxy: Services, upstream: FaultyUpstream, internal: FaultyUpstream, tmp_path: Path
) -> None:
    fill(tmp_path, upstream, internal)
    upstream.redirects[PAGE] = internal_base(internal) + PAGE
    client = create_app(services=proxy).test_client()
    response = page(client)
    assert_refused(response, "upstream is unavailable", REFUSED, statuses=(502,))
    assert upstream.count(PAGE) == 1
    assert internal.count("/") == 0
    assert cached_page(proxy) is None


# --- (c) the same host, allowed by name --------------------------------------------------


@pytest.mark.parametrize("how", ["link", "redirect", "page redirect"])
def test_an_allowed_host_is_fetched_from(
    upstream: FaultyUpstream, internal: FaultyUpstream, tmp_path: Path, how: str
) -> None:
    data = fill(tmp_path, upstream, internal)
    proxy = make_proxy(tmp_path, upstream, upstream_allowed_hosts=("LocalHost",))
    client = create_app(services=proxy).test_client()
    if how == "link":
        upstream.files_url = internal_base(internal) + "/files/"
    elif how == "page redirect":  # the page's relative links then point at the internal host
        upstream.redirects[PAGE] = internal_base(internal) + PAGE
    url, filename = wheel_path(client)
    if how == "redirect":
        upstream.redirects[f"/files/{filename}"] = f"{internal_base(internal)}/files/{filename}"
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.data == data
    assert internal.count(f"/files/{filename}") == 1
    assert upstream.count(f"/files/{filename}") == (1 if how == "redirect" else 0)
    assert_store_holds_only(proxy, hashlib.sha256(data).hexdigest())
    proxy.engine.dispose()


# --- (d) the file size limit -------------------------------------------------------------


def data_files(services: Services) -> set[str]:
    """Every file in the data folder (the database's journal aside), as relative paths."""
    root = services.settings.data_dir
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("wheelfarm.sqlite3")
    }


@pytest.mark.parametrize("framing", ["content-length", CHUNKED])
def test_a_file_over_the_size_limit_is_refused_and_nothing_is_kept(
    upstream: FaultyUpstream, tmp_path: Path, framing: str
) -> None:
    """Refused whether the upstream says the size first (Content-Length) or not (chunked);
    a file of exactly the limit is served."""
    data = fill(tmp_path, upstream)
    proxy = make_proxy(tmp_path, upstream, upstream_max_file_bytes=len(data) - 1)
    client = create_app(services=proxy).test_client()
    url, filename = wheel_path(client)
    before = data_files(proxy)
    if framing == CHUNKED:
        upstream.fail_next(f"/files/{filename}", CHUNKED)
    response = client.get(url)
    assert_refused(response, f"larger than {len(data) - 1} bytes", statuses=(502,))
    assert upstream.count(f"/files/{filename}") == 1
    assert upstream.pending(f"/files/{filename}") == []
    assert_store_holds_only(proxy)  # no blob, no row, no .tmp- file in the storage
    assert [p for p in data_files(proxy) - before if not p.startswith("locks/")] == []
    proxy.engine.dispose()

    exact = make_proxy(tmp_path / "exact", upstream, upstream_max_file_bytes=len(data))
    client = create_app(services=exact).test_client()
    url, filename = wheel_path(client)
    if framing == CHUNKED:
        upstream.fail_next(f"/files/{filename}", CHUNKED)
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.data == data
    exact.engine.dispose()


# --- (e) a hash mismatch names no digest of what was fetched -------------------------------


def test_a_hash_mismatch_does_not_echo_the_fetched_digest(
    proxy: Services, upstream: FaultyUpstream, tmp_path: Path
) -> None:
    data = fill(tmp_path, upstream)
    expected = hashlib.sha256(data).hexdigest()
    other = b"an internal secret the upstream would like to learn the hash of\n"
    upstream.on_file = lambda name: other
    client = create_app(services=proxy).test_client()
    url, _filename = wheel_path(client)
    response = client.get(url)
    assert_refused(response, "does not match", f"expected sha256 {expected}", statuses=(502,))
    answer = response.get_data(as_text=True) + response.status + str(response.headers)
    fetched = hashlib.sha256(other).hexdigest()
    assert fetched not in answer and fetched[:12] not in answer
    assert f"{len(other)} bytes" not in answer  # nor its size
    assert_store_holds_only(proxy)


# --- PyPI's file host ----------------------------------------------------------------------


def test_pypi_as_upstream_trusts_its_file_host_and_nothing_else() -> None:
    """pypi.org's pages link to files.pythonhosted.org; where both resolve to a non-public
    address (a mirror, a test network), the files are fetched as the pages are."""
    pypi = Settings(upstream_urls=("https://pypi.org/simple/",))
    assert pypi.upstream_hosts == {"pypi.org", "files.pythonhosted.org"}
    assert Settings().upstream_hosts == {"pypi.org", "files.pythonhosted.org"}  # the default
    mirror = Settings(upstream_urls=("https://mirror.example/simple/",))
    assert mirror.upstream_hosts == {"mirror.example"}
    both = Settings(
        upstream_urls=("https://mirror.example/simple/", "https://PyPI.org/simple/"),
        upstream_allowed_hosts=("Files.Internal",),
    )
    assert both.upstream_hosts == {
        "mirror.example",
        "pypi.org",
        "files.pythonhosted.org",
        "files.internal",
    }
    assert Settings(upstream_urls=()).upstream_hosts == frozenset()
