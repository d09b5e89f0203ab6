"""Answering with a rendered page: conditional requests, compression, caching headers."""

from __future__ import annotations

from flask import Request, Response

from index_server.simple.cache import RenderedPage

CHARSET_TYPES = ("text/html",)


def page_response(request: Request, page: RenderedPage, max_age: int) -> Response:
    use_gzip = page.gzipped is not None and accepts_gzip(request.headers.get("Accept-Encoding"))
    etag = page.gzip_etag if use_gzip else page.etag
    headers = {
        "ETag": etag,
        "Cache-Control": f"max-age={max_age}, public",
        "Vary": "Accept, Accept-Encoding",
    }
    content_type = page.content_type
    if content_type in CHARSET_TYPES:
        content_type += "; charset=utf-8"
    if _matches(request.headers.get("If-None-Match"), page):
        return Response(status=304, headers=headers)
    body = page.gzipped if use_gzip else page.body
    response = Response(body, status=200, headers=headers, content_type=content_type)
    if use_gzip:
        response.headers["Content-Encoding"] = "gzip"
    return response


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether gzip is acceptable; parsed fully only when a q-value could refuse it."""
    if not accept_encoding or "gzip" not in accept_encoding:
        return False
    if "q=" not in accept_encoding:
        return True
    from werkzeug.datastructures import Accept
    from werkzeug.http import parse_accept_header

    return parse_accept_header(accept_encoding, Accept)["gzip"] > 0


def _matches(if_none_match: str | None, page: RenderedPage) -> bool:
    """Either representation's ETag validates: they carry the same content."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = {page.etag, page.gzip_etag}
    for candidate in if_none_match.split(","):
        tag = candidate.strip().removeprefix("W/")
        if tag in wanted:
            return True
    return False
