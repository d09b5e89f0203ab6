"""Baselines under the same gunicorn settings: how fast can any page be served here?

``wsgi_app`` answers every request with a fixed page (the size of a gzipped 20-file JSON
page) and no framework; ``flask_app`` does the same through a Flask route. Measured with the
same wrk settings, they split a wheelfarm request's cost into gunicorn + wrk (the floor),
Flask/werkzeug, and wheelfarm's own work (database, cache, response headers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response

BODY = hashlib.sha512(b"floor").hexdigest().encode() * 12  # 1.5 KB
HEADERS = [
    ("Content-Type", "application/vnd.pypi.simple.v1+json"),
    ("Content-Length", str(len(BODY))),
    ("ETag", '"0123456789abcdef0123456789abcdef-gz"'),
    ("Cache-Control", "max-age=60, public"),
    ("Vary", "Accept, Accept-Encoding"),
]


def wsgi_app(
    environ: dict[str, Any], start_response: Callable[[str, list[tuple[str, str]]], Any]
) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]


flask_app = Flask(__name__)


@flask_app.get("/<platform>/simple/<project>/")
def page(platform: str, project: str) -> Response:
    return Response(BODY, headers=dict(HEADERS[2:]), content_type=HEADERS[0][1])
