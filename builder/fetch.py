"""Download a file and check its sha256 before anyone builds from it."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

CHUNK = 1 << 16


SECRET_HEADERS = ("authorization", "cookie", "proxy-authorization")


class _SameHostCredentials(urllib.request.HTTPRedirectHandler):
    """Redirects keep credentials only on the same scheme, host and port: urllib would
    otherwise send the worker's token to wherever a redirect points (an S3 endpoint)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for name in list(new.headers):
                if name.lower() in SECRET_HEADERS:
                    del new.headers[name]
        return new


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


class HashMismatch(ValueError):
    """The downloaded bytes are not the ones the index announced."""


def fetch_with_hash(
    url: str,
    dest: Path,
    sha256: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
    max_bytes: int = 2 * 1024**3,
) -> Path:
    """Download ``url`` to ``dest`` (a file path) only if its sha256 is ``sha256``.

    The bytes go to a temporary file next to ``dest`` and are renamed into place once the
    hash matches, so ``dest`` never holds unchecked bytes. On a mismatch nothing is left
    behind and ``HashMismatch`` is raised. ``file://`` URLs work too.
    """
    expected = sha256.lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers=dict(headers or {}))
    opener = urllib.request.build_opener(_SameHostCredentials)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, opener.open(request, timeout=timeout) as resp:
            while chunk := resp.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ValueError(f"{url} is larger than {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected:
            raise HashMismatch(f"{url}: sha256 is {actual}, expected {expected}")
        os.replace(tmp, dest)  # same folder: an atomic rename
    finally:
        tmp.unlink(missing_ok=True)
    return dest
