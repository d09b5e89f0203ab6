"""The JSON admin API under /api/."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from packaging.utils import canonicalize_name

from index_server import admin, audit, auth, owners, repository
from index_server import openapi as spec
from index_server.auth import SCOPES
from index_server.db.engine import read_connection
from index_server.repository import FileRecord
from index_server.views.common import (
    fail,
    has_nul,
    project_name,
    require,
    require_read,
    services,
)

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
    canonical = project_name(name)
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
            {
                "scope": {"type": "string", "enum": list(SCOPES)},
                "name": spec.NAME,
                "owner": spec.NAME,
                "projects": {"type": "array", "items": spec.NAME},
                "platform": spec.NAME,
                "worker": spec.NAME,
            },
            required=["scope"],
        )
    ),
    errors=[409],
    description="`name` defaults to `<scope>-<8 hex digits>`; names are unique (409). "
    "`owner`, `projects` (names or globs), `platform` and `worker` bind the token. "
    "Scopes: read < upload, build < admin (upload and build include read; admin includes all).",
)
def create_token() -> Response:
    who = require("admin")
    body = _json_body()
    scope, name = body.get("scope"), body.get("name")
    if scope not in auth.SCOPES:
        fail(400, f"'scope' must be one of {', '.join(auth.SCOPES)}")
    if name is None:
        name = f"{scope}-{secrets.token_hex(4)}"
    if not isinstance(name, str) or not name or len(name) > 200:
        fail(400, "'name' must be a non-empty string of at most 200 characters")
    options = _token_options(body, str(scope))
    try:
        token_id, secret = auth.create_token(
            services().engine, name, str(scope), actor=who.name, **options
        )
    except auth.TokenNameTaken as exc:
        fail(409, str(exc))
    except ValueError as exc:
        fail(422, str(exc))
    return jsonify({"id": token_id, "name": name, "scope": scope, **options, "token": secret}), 201


def _token_options(body: dict[str, object], scope: str) -> dict[str, Any]:
    """owner, projects, platform and worker of a new token, checked."""
    options: dict[str, Any] = {}
    for key in ("owner", "platform", "worker"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
            fail(422, f"'{key}' must be a non-empty string of at most 200 characters")
        options[key] = value
    if options["platform"] is not None and options["platform"] not in services().platforms:
        fail(422, f"unknown platform {options['platform']!r}")
    projects = body.get("projects")
    if projects is not None:
        if not isinstance(projects, list) or not all(
            isinstance(p, str) and 0 < len(p) <= 200 for p in projects
        ):
            fail(422, "'projects' must be a list of project names or globs")
        projects = [_pattern(p) for p in projects]
    options["projects"] = projects
    return options


def _pattern(name: str) -> str:
    """A project name or glob, normalized like a name (PEP 503) around its wildcards."""
    parts = name.split("*")
    return "*".join(canonicalize_name(p) if p.strip("-_.") else p for p in parts)


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
    who = require("admin")
    if not auth.revoke_token(services().engine, token_id, actor=who.name):
        fail(404, f"no active token with id {token_id}")
    return jsonify({"revoked": token_id})


@bp.get("/events")
@spec.operation(
    "listEvents",
    "audit",
    "The audit log, newest first, filtered and paged",
    "admin",
    {"200": spec.ok(spec.array_of("events", spec.ref("Event")))},
    errors=[422],
    parameters=[
        spec.query_param("action", {"type": "string"}, "an action, or a prefix ending in *"),
        spec.query_param("project", {"type": "string"}, "a project's name"),
        spec.query_param("actor", {"type": "string"}, "who did it (a token's name)"),
        spec.query_param("owner", {"type": "string"}, "the owner of the acting token"),
        spec.query_param("token_id", {"type": "integer", "minimum": 0}, "the acting token"),
        spec.query_param("since", {"type": "string", "format": "date-time"}, "ISO 8601"),
        spec.query_param("until", {"type": "string", "format": "date-time"}, "ISO 8601, inclusive"),
        spec.query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
        spec.query_param("before", {"type": "integer", "minimum": 0}, "next_before of a page"),
    ],
    description="`next_before` in the answer (null on the last page) pages on.",
)
def events() -> Response:
    """The audit log, newest first; filters: action (``build*`` for a prefix), project,
    actor, owner, token_id, since and until (ISO times); paging: limit and before (an event id)."""
    require("admin")
    try:
        where = audit.filter_from_args(request.args)
        limit = audit.page_limit(request.args)
    except audit.BadFilter as exc:
        fail(422, str(exc))
    with read_connection(services().engine) as conn:
        found, following = repository.events_page(conn, limit, where)
    return jsonify({"events": found, "next_before": following})


# === owners ====================================================================================


_OWNERS_ANSWER = spec.obj(
    {"project": {"type": "string"}, "owners": {"type": "array", "items": {"type": "string"}}}
)


@bp.get("/projects/<name>/owners")
@spec.operation(
    "listOwners",
    "owners",
    "A project's owners (users or teams whose tokens may write it)",
    "read",
    {"200": spec.ok(_OWNERS_ANSWER)},
    parameters=[spec.path_text("name", "the project's name (any spelling)")],
)
def project_owners(name: str) -> Response:
    require_read()
    project = project_name(name)
    return jsonify({"project": project, "owners": owners.list_owners(services(), project)})


@bp.post("/projects/<name>/owners")
@spec.operation(
    "addOwner",
    "owners",
    "Add an owner to a project (also claims a name that exists upstream)",
    "admin",
    {
        "201": spec.ok(
            spec.obj(
                {
                    "project": {"type": "string"},
                    "owner": {"type": "string"},
                    "added": {"type": "boolean"},
                }
            ),
            "Added",
        ),
        "200": spec.ok(
            spec.obj(
                {
                    "project": {"type": "string"},
                    "owner": {"type": "string"},
                    "added": {"type": "boolean"},
                }
            ),
            "Already an owner",
        ),
    },
    errors=[422],
    parameters=[spec.path_text("name", "the project's name (any spelling)")],
    body=spec.json_body(spec.obj({"owner": spec.NAME})),
)
def add_owner(name: str) -> Response:
    who = require("admin")
    project = project_name(name)
    owner = _json_body().get("owner")
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 200:
        fail(422, "'owner' must be a non-empty string of at most 200 characters")
    added = owners.add_owner(services(), project, owner.strip(), who.name)
    body = {"project": project, "owner": owner.strip(), "added": added}
    return jsonify(body), 201 if added else 200  # type: ignore[return-value]


@bp.delete("/projects/<name>/owners/<owner>")
@spec.operation(
    "removeOwner",
    "owners",
    "Remove an owner from a project",
    "admin",
    {"200": spec.ok(spec.obj({"project": {"type": "string"}, "removed": {"type": "string"}}))},
    errors=[404],
    parameters=[
        spec.path_text("name", "the project's name (any spelling)"),
        spec.path_text("owner", "the owner's name"),
    ],
)
def remove_owner(name: str, owner: str) -> Response:
    who = require("admin")
    project = project_name(name)
    if not owners.remove_owner(services(), project, owner, who.name):
        fail(404, f"{owner!r} is not an owner of {project!r}")
    return jsonify({"project": project, "removed": owner})
