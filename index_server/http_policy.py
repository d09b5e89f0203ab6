"""Headers and limits every response and request gets.

* ``X-Content-Type-Options: nosniff`` on every response; the console's pages also get a
  Content-Security-Policy (scripts only with this response's nonce, no framing: its admin
  forms cannot be overlaid by another site) and ``X-Frame-Options: DENY`` for old browsers.
* Under read protection every answer is ``Cache-Control: private`` and varies by
  ``Authorization`` (and the console's cookie): a shared proxy or CDN must never hand a
  private page or file to another client.
* A request body other than an upload is at most ``max_json_bytes`` (a 413), also when sent
  chunked: werkzeug would silently cut a chunked body at its limit (a cut JSON body is a
  misleading 400, or taken if the cut falls after its end), so it is read here one byte
  past the limit and a longer one refused.
* A browser holding an admin's Basic credentials must not be a way to write: a mutating
  request another site made (``Sec-Fetch-Site: cross-site``, or an ``Origin`` of another
  host) is a 403, and the JSON API refuses the body types a plain HTML form can send (415).
  The console's forms carry their CSRF token instead.
* Behind ``trusted_proxies`` proxies, X-Forwarded-For/-Proto are believed (ProxyFix), so the
  audit log has the client's address and the console's cookie is ``Secure`` behind TLS.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from index_server.config import Settings

# Routes whose bodies are distribution files: the upload limit (MAX_CONTENT_LENGTH) holds.
UPLOAD_ENDPOINTS = ("upload.upload", "worker_api.upload_wheel")
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)
UNPROTECTED = ("/health", "/api/openapi.json")
MUTATING = ("POST", "PUT", "PATCH", "DELETE")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce  # type: ignore[no-any-return]


def init_app(app: Flask, settings: Settings) -> None:
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0)  # type: ignore[method-assign]
    app.jinja_env.globals["csp_nonce"] = csp_nonce

    @app.before_request
    def _limit_body() -> None:
        if request.endpoint not in UPLOAD_ENDPOINTS:
            request.max_content_length = settings.max_json_bytes
            if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
                _read_chunked_body(settings.max_json_bytes)
        if request.method in MUTATING and not request.path.startswith("/console/"):
            _refuse_cross_site()

    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        headers["X-Content-Type-Options"] = "nosniff"
        if request.path.startswith("/console"):
            headers["Content-Security-Policy"] = CONSOLE_CSP.format(nonce=csp_nonce())
            headers["X-Frame-Options"] = "DENY"
            headers.setdefault("Referrer-Policy", "same-origin")
        if settings.read_requires_token and request.path not in UNPROTECTED:
            _private(response)
        return response


def _read_chunked_body(limit: int) -> None:
    from index_server.views.common import fail

    request.max_content_length = limit + 1  # werkzeug stops there; more than limit is a 413
    if len(request.get_data(cache=True)) > limit:
        fail(413, f"a request body has at most {limit} bytes")


def _refuse_cross_site() -> None:
    from index_server.views.common import fail

    origin = request.headers.get("Origin")
    if request.headers.get("Sec-Fetch-Site") == "cross-site" or (
        origin and origin != "null" and urlsplit(origin).netloc != request.host
    ):
        fail(403, "a write from another site's page is refused")
    if (
        request.path.startswith("/api/")
        and request.endpoint is not None  # no route: the 404 says more
        and request.endpoint not in UPLOAD_ENDPOINTS
        and request.mimetype in FORM_TYPES
    ):
        fail(415, "send the body as application/json")


def _private(response: Response) -> None:
    cache = response.headers.get("Cache-Control", "")
    parts = [p.strip() for p in cache.split(",") if p.strip() and p.strip() != "public"]
    if "private" not in parts:  # also beside no-store: a cache that ignores one sees the other
        parts.insert(0, "private")
    response.headers["Cache-Control"] = ", ".join(parts)
    response.vary.add("Authorization")
    if request.path.startswith("/console"):
        response.vary.add("Cookie")
