"""Talking to an upstream index over HTTP: project pages (JSON first) and files."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from index_server.simple.model import SimpleFile
from index_server.upstream.parse import UpstreamPageError, parse_project_page

# As pip asks: JSON when the upstream speaks it, HTML otherwise.
ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
USER_AGENT = "wheelfarm (+https://github.com/wheelfarm)"

_local = threading.local()
MAX_PAGE_BYTES = 64 * 1024 * 1024  # a project page larger than this is refused
MAX_REDIRECTS = 5

# Who hears of each request to an upstream, as (kind, outcome): kind ``page`` or ``file``,
# outcome ``ok``, ``not_modified``, ``not_found`` or ``error``. The metrics subscribe at app
# setup (``metrics.init_app``), so this module knows nothing of them.
FetchObserver = Callable[[str, str], None]
_observers: list[FetchObserver] = []


def observe_fetches(observer: FetchObserver) -> None:
    """Call ``observer(kind, outcome)`` after every upstream request (once per observer)."""
    if observer not in _observers:
        _observers.append(observer)


def record_upstream_fetch(kind: str, outcome: str) -> None:
    for observer in _observers:
        observer(kind, outcome)


class UpstreamError(Exception):
    """The upstream could not be reached, or answered with an error or a bad page."""


@dataclass(frozen=True)
class PageFetch:
    status: int  # 200, 304 (not modified) or 404
    files: list[SimpleFile] | None = None
    etag: str | None = None
    last_modified: str | None = None


def session() -> requests.Session:
    """One HTTP session (connection pool) per thread."""
    current = getattr(_local, "session", None)
    if current is None:
        current = requests.Session()
        current.headers["User-Agent"] = USER_AGENT
        current.max_redirects = MAX_REDIRECTS
        _local.session = current
    return current


def check_target(url: str, allowed_hosts: Collection[str]) -> None:
    """Refuse a URL whose host is not public (loopback, private, link-local: the cloud's
    metadata service), unless it is a configured upstream's host or allowed by name."""
    host = (urlsplit(url).hostname or "").lower()
    if host in allowed_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise UpstreamError(f"{url}: cannot resolve {host!r}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise UpstreamError(
                f"{url}: refused, {host} is not a public address "
                "(WHEELFARM_UPSTREAM_ALLOWED_HOSTS allows it)"
            )


def _guard(allowed_hosts: Collection[str]):  # type: ignore[no-untyped-def]
    """A response hook: every redirect's target passes :func:`check_target` first."""

    def hook(response: requests.Response, **_kwargs: object) -> None:
        if response.is_redirect:
            target = urljoin(response.url, response.headers["Location"])
            try:
                check_target(target, allowed_hosts)
            except UpstreamError:
                response.close()  # a refused redirect's connection goes back to the pool
                raise

    return hook


def project_url(upstream: str, project: str) -> str:
    return f"{upstream}{project}/"


def fetch_project_page(
    upstream: str,
    project: str,
    timeout: float,
    etag: str | None = None,
    last_modified: str | None = None,
    allowed_hosts: Collection[str] = (),
) -> PageFetch:
    url = project_url(upstream, project)
    allowed_hosts = {*allowed_hosts, (urlsplit(upstream).hostname or "").lower()}
    headers = {"Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        response = session().get(
            url,
            headers=headers,
            timeout=timeout,
            stream=True,
            hooks={"response": _guard(allowed_hosts)},
        )
        with response:
            body = _read_within(response, time.monotonic() + timeout)
    except requests.RequestException as exc:
        record_upstream_fetch("page", "error")
        raise UpstreamError(f"{url}: {type(exc).__name__}: {_short(exc)}") from None
    except UpstreamError:  # a redirect to a host that is not allowed
        record_upstream_fetch("page", "error")
        raise
    if response.status_code == 304 and (etag or last_modified):
        record_upstream_fetch("page", "not_modified")
        return PageFetch(304, etag=etag, last_modified=last_modified)
    if response.status_code == 404:
        record_upstream_fetch("page", "not_found")
        return PageFetch(404)
    try:
        if response.status_code != 200:
            raise UpstreamError(f"{url}: HTTP {response.status_code}")
        files = parse_project_page(
            body, response.headers.get("Content-Type", "text/html"), response.url
        )
    except (UpstreamError, UpstreamPageError) as exc:
        record_upstream_fetch("page", "error")
        raise UpstreamError(
            str(exc) if isinstance(exc, UpstreamError) else f"{url}: {exc}"
        ) from None
    record_upstream_fetch("page", "ok")
    return PageFetch(
        200,
        files=files,
        etag=response.headers.get("ETag"),
        last_modified=response.headers.get("Last-Modified"),
    )


def _read_within(response: requests.Response, deadline: float) -> bytes:
    """The whole body by ``deadline``. The timeout bounds each read; this bounds the answer,
    so that an upstream trickling a page does not hold the page (and its lock) for ever."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 before 2.3: each read waits for its whole size
        return response.content
    chunks = []
    try:
        size = 0
        while chunk := read1(64 * 1024, decode_content=True):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_PAGE_BYTES:
                raise requests.exceptions.ContentDecodingError(
                    f"the page is larger than {MAX_PAGE_BYTES} bytes"
                )
            if time.monotonic() > deadline:
                raise requests.exceptions.ReadTimeout("the page took longer than the timeout")
    except urllib3.exceptions.HTTPError as exc:  # as requests would wrap it
        raise requests.exceptions.ConnectionError(exc) from None
    return b"".join(chunks)


class DigestMismatch(UpstreamError):
    """The downloaded bytes do not have the hash the upstream page announced."""


@contextmanager
def _stream(
    url: str, timeout: float, allowed_hosts: Collection[str]
) -> Iterator[requests.Response]:
    check_target(url, allowed_hosts)
    try:
        with session().get(
            url, stream=True, timeout=timeout, hooks={"response": _guard(allowed_hosts)}
        ) as response:
            if response.status_code != 200:
                raise UpstreamError(f"{url}: HTTP {response.status_code}")
            yield response
    except requests.RequestException as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__}: {_short(exc)}") from None


def download_verified(
    url: str,
    expected_sha256: str,
    out: BinaryIO,
    timeout: float,
    *,
    allowed_hosts: Collection[str] = (),
    max_bytes: int = 4 * 1024**3,
) -> int:
    """Download ``url`` into ``out``; raise DigestMismatch unless its sha256 is expected.

    Only public hosts (or ``allowed_hosts``), also through redirects; at most ``max_bytes``.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with _stream(url, timeout, allowed_hosts) as response:
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > max_bytes:  # refused before reading
                raise UpstreamError(f"{url}: larger than {max_bytes} bytes")
            try:
                for chunk in response.iter_content(1024 * 1024):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if size > max_bytes:
                        raise UpstreamError(f"{url}: larger than {max_bytes} bytes")
            except requests.RequestException as exc:
                raise UpstreamError(f"{url}: {type(exc).__name__}: {_short(exc)}") from None
    except UpstreamError:
        record_upstream_fetch("file", "error")
        raise
    record_upstream_fetch("file", "ok")
    if digest.hexdigest() != expected_sha256.lower():
        # Only the digest the page announced: the one of what was fetched (or its size) would
        # tell a client something of whatever an upstream made the server fetch.
        raise DigestMismatch(
            f"{url}: the content does not match the sha256 the upstream announced "
            f"(expected sha256 {expected_sha256.lower()}, got other bytes)"
        )
    return size


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else ""
