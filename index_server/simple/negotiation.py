"""Choosing the response format of a Simple API page from the request (PEP 691)."""

from __future__ import annotations

from functools import lru_cache

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

HTML = "text/html"
V1_HTML = "application/vnd.pypi.simple.v1+html"
V1_JSON = "application/vnd.pypi.simple.v1+json"
_LATEST = {
    "application/vnd.pypi.simple.latest+html": V1_HTML,
    "application/vnd.pypi.simple.latest+json": V1_JSON,
}
# Server order breaks ties: a bare */* (or no Accept at all) gets plain HTML, as on PyPI.
_OFFERS = [HTML, V1_HTML, V1_JSON, *_LATEST]
_FORMAT_PARAM = {"json": V1_JSON, "html": V1_HTML}


def is_json(content_type: str) -> bool:
    return content_type == V1_JSON


@lru_cache(maxsize=256)
def choose_content_type(accept: str | None, format_param: str | None = None) -> str | None:
    """The content type to answer with, or None when nothing acceptable is offered (406)."""
    if format_param:
        return _FORMAT_PARAM.get(format_param.lower())
    if not accept or not accept.strip():
        return HTML
    best = parse_accept_header(accept, MIMEAccept).best_match(_OFFERS)
    if best is None:
        return None
    return _LATEST.get(best, best)
