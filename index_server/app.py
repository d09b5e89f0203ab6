"""The Flask application."""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from index_server import audit, console, http_policy, metrics
from index_server.config import Settings
from index_server.services import Services, build_services
from index_server.views import api, builds_api, files, platforms_api, simple, upload, worker_api
from index_server.views.common import IdConverter, error_response, refuse_nul, require_read


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    if services is None:
        services = build_services(settings or Settings.from_env())
    app = Flask(__name__)
    app.url_map.converters["int"] = IdConverter  # ids beyond the database's integers: 404
    app.extensions["wheelfarm"] = services
    # Checked by werkzeug before the body is read; larger uploads get a 413.
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_upload_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024 * 1024
    app.json.sort_keys = False  # type: ignore[attr-defined]
    for blueprint in (api.bp, builds_api.bp, worker_api.bp, upload.bp, files.bp, simple.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(platforms_api.bp)
    app.register_error_handler(HTTPException, error_response)
    app.before_request(lambda: audit.begin_request(request.remote_addr))
    app.before_request(refuse_nul)
    app.teardown_request(lambda _exc: audit.end_request())
    http_policy.init_app(app, services.settings)
    console.init_app(app, services)
    metrics.init_app(app, services)

    @app.get("/")
    def home() -> Response:
        require_read()
        names = sorted(services.platforms)
        if "application/json" in request.headers.get("Accept", ""):
            return jsonify({"platforms": names})
        links = "\n".join(f'<li><a href="/{n}/simple/">{n}</a></li>' for n in names)
        return Response(
            "<!DOCTYPE html><html><head><title>wheelfarm</title></head><body>"
            f"<h1>wheelfarm</h1><p>One index per platform:</p><ul>\n{links}\n</ul>"
            "</body></html>\n",
            content_type="text/html; charset=utf-8",
        )

    @app.get("/health")
    def health() -> Response:
        return jsonify({"status": "ok"})

    return app
