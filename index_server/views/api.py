"""The JSON admin API under /api/."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from packaging.utils import canonicalize_name

from index_server import admin, auth, repository
from index_server import openapi as spec
from index_server.auth import SCOPES
from index_server.db.engine import read_connection
from index_server.repository import FileRecord
from index_server.views.common import fail, has_nul, require, require_read, services

bp = Blueprint("api", __name__, url_prefix="/api")


def file_json(record: FileRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "project": record.project,
        "filename": record.filename,
        "version": record.version,
        "platform": record.platform or None,
        "packagetype": record.packagetype,
        "sha256": record.sha256,
        "size": record.size,
        "requires_python": record.requires_python,
        "yanked": record.yanked,
        "yanked_reason": record.yanked_reason,
        "uploaded_at": record.uploaded_at.isoformat(),
        "uploaded_by": record.uploaded_by,
        "origin": record.origin,
        "url": f"/files/{record.sha256}/{record.filename}",
    }


def _json_body() -> dict[str, object]:
    if not request.data:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        fail(400, "request body must be a JSON object")
    if has_nul(body):
        fail(400, "NUL characters are not allowed")
    return body


@bp.get("/openapi.json")
@spec.operation(
    "getOpenAPI",
    "meta",
    "This document",
    None,
    {"200": spec.ok({"type": "object", "required": ["openapi", "info", "paths"]})},
)
def openapi() -> Response:
    return jsonify(spec.openapi_document(current_app, services().platforms))


@bp.get("/platforms")
@spec.operation(
    "listPlatforms",
    "index",
    "The platforms this server has an index for",
    "read",
    {"200": spec.ok(spec.array_of("platforms", spec.ref("Platform")))},
)
def platforms() -> Response:
    require_read()
    return jsonify({"platforms": [p.to_json() for p in services().platforms.values()]})


@bp.get("/projects")
@spec.operation(
    "listProjects",
    "index",
    "Every project with its number of files",
    "read",
    {"200": spec.ok(spec.array_of("projects", spec.ref("ProjectSummary")))},
)
def projects() -> Response:
    require_read()
    with read_connection(services().engine) as conn:
        return jsonify({"projects": repository.list_projects(conn)})


@bp.get("/projects/<name>")
@spec.operation(
    "getProject",
    "index",
    "A project's files, on every platform",
    "read",
    {
        "200": spec.ok(
            spec.obj(
                {
                    "name": {"type": "string"},
                    "files": {"type": "array", "items": spec.ref("File")},
                }
            )
        )
    },
    errors=[404],
    parameters=[spec.path_text("name", "the project's name (any spelling)")],
)
def project_files(name: str) -> Response:
    require_read()
    canonical = canonicalize_name(name)
    with read_connection(services().engine) as conn:
        if repository.project_state(conn, canonical) is None:
            fail(404, f"project {canonical!r} not found")
        records = repository.list_project_files(conn, canonical)
    return jsonify({"name": canonical, "files": [file_json(r) for r in records]})


@bp.post("/files/<int:file_id>/yank")
@spec.operation(
    "yankFile",
    "files",
    "Yank a file (PEP 592): installers skip it unless pinned",
    "admin",
    {"200": spec.ok(spec.ref("File"), "The file, yanked")},
    errors=[404],
    parameters=[spec.FILE_ID],
    body=spec.json_body(spec.obj(spec.REASON, required=()), required=False),
)
def yank(file_id: int) -> Response:
    who = require("admin")
    reason = _json_body().get("reason")
    if reason is not None and not isinstance(reason, str):
        fail(400, "'reason' must be a string")
    try:
        return jsonify(file_json(admin.yank_file(services(), file_id, reason, who.name)))
    except admin.NotFound as exc:
        fail(404, str(exc))


@bp.post("/files/<int:file_id>/unyank")
@spec.operation(
    "unyankFile",
    "files",
    "Undo a yank",
    "admin",
    {"200": spec.ok(spec.ref("File"), "The file, not yanked")},
    errors=[404],
    parameters=[spec.FILE_ID],
)
def unyank(file_id: int) -> Response:
    who = require("admin")
    try:
        return jsonify(file_json(admin.unyank_file(services(), file_id, who.name)))
    except admin.NotFound as exc:
        fail(404, str(exc))


@bp.delete("/files/<int:file_id>")
@spec.operation(
    "deleteFile",
    "files",
    "Delete a file (its bytes go when no other file shares them)",
    "admin",
    {"200": spec.ok(spec.obj({"deleted": spec.ref("File")}), "The deleted file")},
    errors=[404],
    parameters=[spec.FILE_ID],
)
def delete(file_id: int) -> Response:
    who = require("admin")
    try:
        return jsonify({"deleted": file_json(admin.delete_file(services(), file_id, who.name))})
    except admin.NotFound as exc:
        fail(404, str(exc))


@bp.get("/tokens")
@spec.operation(
    "listTokens",
    "tokens",
    "Every token (never their secrets)",
    "admin",
    {"200": spec.ok(spec.array_of("tokens", spec.ref("Token")))},
)
def tokens() -> Response:
    require("admin")
    return jsonify({"tokens": auth.list_tokens(services().engine)})


@bp.post("/tokens")
@spec.operation(
    "createToken",
    "tokens",
    "Create a token; its secret is shown once, in this answer",
    "admin",
    {
        "201": spec.ok(
            spec.obj(
                {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "scope": {"type": "string", "enum": list(SCOPES)},
                    "token": {"type": "string"},
                }
            ),
            "The new token, with its secret",
        )
    },
    body=spec.json_body(
        spec.obj(
            {"scope": {"type": "string", "enum": list(SCOPES)}, "name": spec.NAME},
            required=["scope"],
        )
    ),
    description="`name` defaults to `api`. Scopes: read < upload, build < admin "
    "(upload and build include read; admin includes all).",
)
def create_token() -> Response:
    require("admin")
    body = _json_body()
    scope, name = body.get("scope"), body.get("name", "api")
    if scope not in auth.SCOPES:
        fail(400, f"'scope' must be one of {', '.join(auth.SCOPES)}")
    if not isinstance(name, str) or not name or len(name) > 200:
        fail(400, "'name' must be a non-empty string of at most 200 characters")
    token_id, secret = auth.create_token(services().engine, name, str(scope))
    return jsonify({"id": token_id, "name": name, "scope": scope, "token": secret}), 201


@bp.delete("/tokens/<int:token_id>")
@spec.operation(
    "revokeToken",
    "tokens",
    "Revoke a token",
    "admin",
    {"200": spec.ok(spec.obj({"revoked": {"type": "integer"}}))},
    errors=[404],
    parameters=[spec.path_id("token_id", "token")],
)
def revoke_token(token_id: int) -> Response:
    require("admin")
    if not auth.revoke_token(services().engine, token_id):
        fail(404, f"no active token with id {token_id}")
    return jsonify({"revoked": token_id})


@bp.get("/events")
@spec.operation(
    "listEvents",
    "audit",
    "The audit log, newest first (the last 100 events)",
    "admin",
    {"200": spec.ok(spec.array_of("events", spec.ref("Event")))},
)
def events() -> Response:
    require("admin")
    with read_connection(services().engine) as conn:
        return jsonify({"events": repository.list_events(conn)})
