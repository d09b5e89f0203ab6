"""The OpenAPI 3.1 description of the JSON API under /api/, served at /api/openapi.json.

Built here in Python so that the worker protocol's message schemas (``builder.protocol``) are
embedded as they are, not copied: the server validates worker messages against the very
schemas this document shows. ``tests/test_openapi.py`` checks that every route under /api/
is described, and runs schemathesis against the app with this document.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from builder import protocol
from index_server.auth import SCOPES
from index_server.views.builds_api import STATES

JSON = "application/json"
Schema = dict[str, Any]

# How each operation is authorised: None = public; "read" = the read scope, needed only when
# the server sets WHEELFARM_READ_REQUIRES_TOKEN; else the scope the token must allow.
_SCOPE_NOTE = {
    None: "Public: no token needed.",
    "read": "Needs a token with the `read` scope only when the server sets "
    "WHEELFARM_READ_REQUIRES_TOKEN; otherwise public.",
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(type_: str, **more: Any) -> Schema:
    return {"type": [type_, "null"], **more}


def _object(properties: dict[str, Schema], required: Iterable[str] | None = None) -> Schema:
    """An object; every listed property is required unless ``required`` says otherwise."""
    return {
        "type": "object",
        "required": list(properties if required is None else required),
        "properties": properties,
    }


def _array_of(name: str, item: Schema) -> Schema:
    return _object({name: {"type": "array", "items": item}})


_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}


def _schemas() -> dict[str, Schema]:
    build_result = _object(
        {
            "wheels": {"type": "array", "items": {"type": "string"}},
            "shared_libraries": {"type": "array", "items": {"type": "string"}},
            "os_packages": {"type": "array", "items": {"type": "string"}},
            "os_packages_closure": {"type": "array", "items": {"type": "string"}},
            "compiled": {"type": ["boolean", "null"]},
        },
        required=(),
    )
    build = _object(
        {
            "id": {"type": "integer"},
            "project": {"type": "string"},
            "version": {"type": "string"},
            "platform": {"type": "string"},
            "state": {"type": "string", "enum": list(STATES)},
            "source": {"type": "string", "description": "first-sight, request, warm, rebuild"},
            "requested_by": {"type": "string"},
            "requested_at": _TIME,
            "attempts": {"type": "integer", "minimum": 0},
            "not_before": _TIME_OR_NULL,
            "worker": _nullable("string"),
            "lease_expires_at": _TIME_OR_NULL,
            "started_at": _TIME_OR_NULL,
            "finished_at": _TIME_OR_NULL,
            "waited_seconds": _nullable("number"),
            "build_seconds": _nullable("number"),
            "image_id": _nullable("string"),
            "error_category": _nullable("string"),
            "error_summary": _nullable("string"),
            "reason": _nullable("string", description="why skipped or cancelled"),
            "result": {"oneOf": [build_result, {"type": "null"}]},
            "log": {"type": "string", "description": "only on GET /api/builds/{job_id}"},
        },
        required=("id", "project", "version", "platform", "state", "requested_at", "result"),
    )
    return {
        "Error": {
            "type": "object",
            "description": "Every error under /api/: a one-line reason and the status code.",
            "required": ["error", "status"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string"},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
            },
        },
        "Platform": _object(
            {
                "name": {"type": "string"},
                "os": {"type": "string"},
                "release": {"type": "string"},
                "python": {"type": "string", "examples": ["3.11"]},
                "arch": {"type": "string"},
                "glibc": {"type": "string"},
                "base_image": {"type": "string"},
                "manylinux": {"type": "boolean"},
                "platform_tags": {"type": "array", "items": {"type": "string"}},
                "tags_count": {"type": "integer"},
                "best_tag": {"type": "string"},
            }
        ),
        "ProjectSummary": _object(
            {
                "name": {"type": "string", "description": "canonical (PEP 503)"},
                "display_name": {"type": "string"},
                "files": {"type": "integer", "minimum": 0},
            }
        ),
        "File": _object(
            {
                "id": {"type": "integer"},
                "project": {"type": "string"},
                "filename": {"type": "string"},
                "version": {"type": "string"},
                "platform": _nullable("string", description="null: every platform"),
                "packagetype": {"type": "string", "enum": ["sdist", "bdist_wheel"]},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "size": {"type": "integer", "minimum": 0},
                "requires_python": _nullable("string"),
                "yanked": {"type": "boolean"},
                "yanked_reason": _nullable("string"),
                "uploaded_at": _TIME,
                "uploaded_by": {"type": "string"},
                "origin": {"type": "string", "enum": ["upload", "build"]},
                "url": {"type": "string"},
            }
        ),
        "Token": _object(
            {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "scope": {"type": "string", "enum": list(SCOPES)},
                "prefix": {"type": "string"},
                "created_at": _TIME,
                "revoked": {"type": "boolean"},
            }
        ),
        "Event": _object(
            {
                "id": {"type": "integer"},
                "at": _TIME,
                "actor": {"type": "string"},
                "action": {"type": "string"},
                "project": _nullable("string"),
                "filename": _nullable("string"),
                "detail": _nullable("string"),
            }
        ),
        "Build": build,
        "BuildRequestOutcome": _object(
            {
                "project": {"type": "string"},
                "version": {"type": "string"},
                "platform": {"type": "string"},
                "outcome": {"type": "string", "enum": ["queued", "exists", "has_wheel", "skipped"]},
                "job_id": _nullable("integer"),
                "state": {"type": ["string", "null"], "enum": [*STATES, None]},
            }
        ),
        "Skip": _object(
            {
                "id": {"type": "integer"},
                "project": {"type": "string"},
                "version": {"type": "string", "description": "empty: every version"},
                "reason": {"type": "string"},
                "created_at": _TIME,
                "created_by": {"type": "string"},
            }
        ),
        "UploadedWheel": _object(
            {
                "filename": {"type": "string"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "created": {"type": "boolean", "description": "false: already stored"},
                "platform": _nullable("string"),
            },
            required=("filename", "sha256", "created"),
        ),
        "Worker": _object(
            {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "platforms": {"type": "array", "items": {"type": "string"}},
                "runner": {"type": "string"},
                "first_seen": _TIME,
                "last_seen": _TIME,
                "current_job": _nullable("integer"),
                "alive": {"type": "boolean"},
            }
        ),
        # The worker protocol, exactly as the server validates it (builder.protocol).
        "BuildSettings": copy.deepcopy(protocol.BUILD_SETTINGS),
        "Claim": copy.deepcopy(protocol.CLAIM),
        "Job": copy.deepcopy(protocol.JOB),
        "Heartbeat": copy.deepcopy(protocol.HEARTBEAT),
        "HeartbeatReply": copy.deepcopy(protocol.HEARTBEAT_REPLY),
        "Log": copy.deepcopy(protocol.LOG),
        "Finish": copy.deepcopy(protocol.FINISH),
    }


_ERRORS = {
    "400": "The request is malformed: a body, field or query parameter is invalid.",
    "401": "No token was presented (the answer carries `WWW-Authenticate: Basic`).",
    "403": "The token is invalid or revoked, or its scope does not allow this.",
    "404": "No such object (or unknown platform).",
    "409": "The object's state does not allow this.",
    "413": "The upload is larger than the server accepts.",
}


def _responses() -> dict[str, Schema]:
    error = {JSON: {"schema": _ref("Error")}}
    responses: dict[str, Schema] = {
        code: {"description": text, "content": error} for code, text in _ERRORS.items()
    }
    responses["401"]["headers"] = {
        "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
    }
    return responses


def _ok(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _id(name: str, what: str) -> Schema:
    # werkzeug's int converter: digits only; ids are 32-bit database keys.
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"the {what}'s id",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    }


def _path_text(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^/]+$"},
    }


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    scope: str | None,
    ok: dict[str, Schema],
    *,
    errors: Iterable[int] = (),
    parameters: Iterable[Schema] = (),
    body: Schema | None = None,
    description: str = "",
) -> Schema:
    """One operation, with its security, the scope it needs and its error answers."""
    parameters = list(parameters)
    codes = [*errors, *((401, 403) if scope else ())]
    # A body, a query or a text in the path can be malformed (or hold a NUL): 400.
    texts = [p for p in parameters if p["in"] == "query" or p["schema"].get("type") == "string"]
    if body is not None or texts:
        codes.append(400)
    note = _SCOPE_NOTE.get(scope, f"Needs a token with the `{scope}` scope.")
    op: Schema = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": f"{description}\n\n{note}".strip(),
        "x-wheelfarm-scope": scope,
        "responses": {
            **ok,
            **{str(c): {"$ref": f"#/components/responses/{c}"} for c in sorted(set(codes))},
        },
    }
    if scope is None:
        op["security"] = []
    else:
        required = [{"bearerAuth": [scope]}, {"basicAuth": [scope]}]
        op["security"] = [{}, *required] if scope == "read" else required
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = body
    return op


def _paths(platforms: list[str]) -> dict[str, Schema]:
    platform_name: Schema = {"type": "string", "minLength": 1}
    if platforms:
        platform_name = {"type": "string", "enum": platforms}
    file_id, job_id = _id("file_id", "file"), _id("job_id", "build job")
    project = _path_text("project", "the project's name (any spelling; canonicalised)")
    reason = {"reason": {"type": ["string", "null"]}}
    op = _operation
    return {
        "/api/openapi.json": {
            "get": op(
                "getOpenAPI",
                "meta",
                "This document",
                None,
                {"200": _ok({"type": "object", "required": ["openapi", "info", "paths"]})},
            )
        },
        "/api/platforms": {
            "get": op(
                "listPlatforms",
                "index",
                "The platforms this server has an index for",
                "read",
                {"200": _ok(_array_of("platforms", _ref("Platform")))},
            )
        },
        "/api/projects": {
            "get": op(
                "listProjects",
                "index",
                "Every project with its number of files",
                "read",
                {"200": _ok(_array_of("projects", _ref("ProjectSummary")))},
            )
        },
        "/api/projects/{name}": {
            "get": op(
                "getProject",
                "index",
                "A project's files, on every platform",
                "read",
                {
                    "200": _ok(
                        _object(
                            {
                                "name": {"type": "string"},
                                "files": {"type": "array", "items": _ref("File")},
                            }
                        )
                    )
                },
                errors=[404],
                parameters=[_path_text("name", "the project's name (any spelling)")],
            )
        },
        "/api/files/{file_id}/yank": {
            "post": op(
                "yankFile",
                "files",
                "Yank a file (PEP 592): installers skip it unless pinned",
                "admin",
                {"200": _ok(_ref("File"), "The file, yanked")},
                errors=[404],
                parameters=[file_id],
                body=_body(_object(reason, required=()), required=False),
            )
        },
        "/api/files/{file_id}/unyank": {
            "post": op(
                "unyankFile",
                "files",
                "Undo a yank",
                "admin",
                {"200": _ok(_ref("File"), "The file, not yanked")},
                errors=[404],
                parameters=[file_id],
            )
        },
        "/api/files/{file_id}": {
            "delete": op(
                "deleteFile",
                "files",
                "Delete a file (its bytes go when no other file shares them)",
                "admin",
                {"200": _ok(_object({"deleted": _ref("File")}), "The deleted file")},
                errors=[404],
                parameters=[file_id],
            )
        },
        "/api/tokens": {
            "get": op(
                "listTokens",
                "tokens",
                "Every token (never their secrets)",
                "admin",
                {"200": _ok(_array_of("tokens", _ref("Token")))},
            ),
            "post": op(
                "createToken",
                "tokens",
                "Create a token; its secret is shown once, in this answer",
                "admin",
                {
                    "201": _ok(
                        _object(
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
                body=_body(
                    _object(
                        {"scope": {"type": "string", "enum": list(SCOPES)}, "name": _NAME},
                        required=["scope"],
                    )
                ),
                description="`name` defaults to `api`. Scopes: read < upload, build < admin "
                "(upload and build include read; admin includes all).",
            ),
        },
        "/api/tokens/{token_id}": {
            "delete": op(
                "revokeToken",
                "tokens",
                "Revoke a token",
                "admin",
                {"200": _ok(_object({"revoked": {"type": "integer"}}))},
                errors=[404],
                parameters=[_id("token_id", "token")],
            )
        },
        "/api/events": {
            "get": op(
                "listEvents",
                "audit",
                "The audit log, newest first (the last 100 events)",
                "admin",
                {"200": _ok(_array_of("events", _ref("Event")))},
            )
        },
        "/api/builds": {
            "get": op(
                "listBuilds",
                "builds",
                "Build jobs, newest first, optionally filtered",
                "read",
                {"200": _ok(_array_of("builds", _ref("Build")))},
                errors=[404],
                parameters=[
                    _query("state", {"type": "string", "enum": list(STATES)}, "only this state"),
                    _query("platform", platform_name, "only this platform (404 if unknown)"),
                    _query("project", {"type": "string"}, "only this project"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100},
                        "at most this many (larger values count as 1000)",
                    ),
                ],
            ),
            "post": op(
                "requestBuilds",
                "builds",
                "Queue a build of a project version for one or more platforms",
                "upload",
                {"200": _ok(_array_of("requests", _ref("BuildRequestOutcome")))},
                errors=[404],
                body=_body(
                    _object(
                        {
                            "project": _NAME,
                            "version": {"type": "string", "minLength": 1, "maxLength": 100},
                            "platforms": {
                                "type": "array",
                                "minItems": 1,
                                "items": platform_name,
                            },
                        }
                    )
                ),
                description="Never queues twice: an existing job or an existing wheel for the "
                "platform is reported instead. `version` must be a PEP 440 version.",
            ),
        },
        "/api/builds/{job_id}": {
            "get": op(
                "getBuild",
                "builds",
                "A build job, with its log",
                "read",
                {"200": _ok(_ref("Build"))},
                errors=[404],
                parameters=[job_id],
            )
        },
        "/api/builds/{job_id}/rebuild": {
            "post": op(
                "rebuildBuild",
                "builds",
                "Queue a finished (succeeded, failed, skipped, cancelled) job again",
                "admin",
                {"200": _ok(_ref("Build"))},
                errors=[404, 409],
                parameters=[job_id],
            )
        },
        "/api/builds/{job_id}/cancel": {
            "post": op(
                "cancelBuild",
                "builds",
                "Cancel a queued or running job",
                "admin",
                {"200": _ok(_ref("Build"))},
                errors=[404, 409],
                parameters=[job_id],
                body=_body(_object(reason, required=()), required=False),
            )
        },
        "/api/builds/{job_id}/skip": {
            "post": op(
                "skipBuild",
                "builds",
                "Mark a queued, failed or cancelled job as skipped",
                "admin",
                {"200": _ok(_ref("Build"))},
                errors=[404, 409],
                parameters=[job_id],
                body=_body(_object({"reason": {"type": "string", "minLength": 1}})),
            )
        },
        "/api/skips": {
            "get": op(
                "listSkips",
                "builds",
                "The skip list: projects (version empty) and versions never built",
                "read",
                {"200": _ok(_array_of("skips", _ref("Skip")))},
            ),
            "post": op(
                "addSkip",
                "builds",
                "Put a project or one version on the skip list; its queued jobs are skipped",
                "admin",
                {
                    "201": _ok(
                        _object({"project": {"type": "string"}, "version": _nullable("string")}),
                        "On the skip list",
                    )
                },
                body=_body(
                    _object(
                        {
                            "project": _NAME,
                            "version": {"type": ["string", "null"], "maxLength": 100},
                            "reason": {"type": "string", "minLength": 1},
                        },
                        required=["project", "reason"],
                    )
                ),
            ),
        },
        "/api/skips/{project}": {
            "delete": op(
                "removeSkip",
                "builds",
                "Take a project (or, with `version`, one version) off the skip list",
                "admin",
                {
                    "200": _ok(
                        _object({"removed": {"type": "string"}, "version": _nullable("string")})
                    )
                },
                errors=[404],
                parameters=[
                    project,
                    _query("version", {"type": "string"}, "the version; none: the whole project"),
                ],
            )
        },
        "/api/build-settings/{project}": {
            "get": op(
                "getBuildSettings",
                "builds",
                "A project's build settings (empty if none)",
                "read",
                {
                    "200": _ok(
                        _object({"project": {"type": "string"}, "settings": _ref("BuildSettings")})
                    )
                },
                parameters=[project],
            ),
            "put": op(
                "putBuildSettings",
                "builds",
                "Replace a project's build settings",
                "admin",
                {
                    "200": _ok(
                        _object({"project": {"type": "string"}, "settings": _ref("BuildSettings")})
                    )
                },
                parameters=[project],
                body=_body(_ref("BuildSettings")),
            ),
        },
        "/api/workers": {
            "get": op(
                "listWorkers",
                "builds",
                "Workers as last seen through their claims and heartbeats",
                "read",
                {"200": _ok(_array_of("workers", _ref("Worker")))},
            )
        },
        "/api/worker/claim": {
            "post": op(
                "claimJob",
                "worker protocol",
                "Claim the oldest ready job of these platforms, with a lease",
                "build",
                {
                    "200": _ok(_ref("Job"), "A job, leased to this worker"),
                    "204": {"description": "No work for these platforms now"},
                },
                body=_body(_ref("Claim")),
            )
        },
        "/api/worker/jobs/{job_id}/heartbeat": {
            "post": op(
                "heartbeat",
                "worker protocol",
                "Renew the lease; `cancel` true asks the worker to stop",
                "build",
                {"200": _ok(_ref("HeartbeatReply"))},
                errors=[404, 409],
                parameters=[job_id],
                body=_body(_ref("Heartbeat")),
                description="409: the lease is no longer valid; the worker must stop.",
            )
        },
        "/api/worker/jobs/{job_id}/log": {
            "post": op(
                "appendLog",
                "worker protocol",
                "Append text to the job's log",
                "build",
                {"204": {"description": "Appended"}},
                errors=[404, 409],
                parameters=[job_id],
                body=_body(_ref("Log")),
            )
        },
        "/api/worker/jobs/{job_id}/wheels": {
            "post": op(
                "uploadBuiltWheel",
                "worker protocol",
                "Upload a wheel the job built (through the same checks as uploads)",
                "build",
                {
                    "201": _ok(_ref("UploadedWheel"), "Stored"),
                    "200": _ok(_ref("UploadedWheel"), "Already stored, the same bytes"),
                },
                errors=[404, 409, 413],
                parameters=[job_id],
                body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": _object(
                                {
                                    "lease": protocol.HEARTBEAT["properties"]["lease"],
                                    "sha256_digest": {
                                        "type": "string",
                                        "pattern": "^[0-9a-f]{64}$",
                                    },
                                    "content": {
                                        "type": "string",
                                        "contentMediaType": "application/octet-stream",
                                        "description": "the wheel, under its file name",
                                    },
                                },
                                required=["lease", "content"],
                            ),
                            "encoding": {"content": {"contentType": "application/octet-stream"}},
                        }
                    },
                },
            )
        },
        "/api/worker/jobs/{job_id}/finish": {
            "post": op(
                "finishJob",
                "worker protocol",
                "Report the job's outcome; transient failures are queued again with backoff",
                "build",
                {"200": _ok(_ref("Build"), "The job, as recorded")},
                errors=[404, 409],
                parameters=[job_id],
                body=_body(_ref("Finish")),
            )
        },
    }


def _version() -> str:
    try:
        return metadata.version("wheelfarm")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


def openapi_document(platforms: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of /api/; ``platforms`` (the configured names) become enums."""
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "wheelfarm admin API",
            "version": _version(),
            "description": (
                "The JSON API of a wheelfarm server: platforms, projects and files, tokens, the "
                "audit log, the build farm, and the worker protocol.\n\n"
                "Authentication: a token as `Authorization: Bearer <token>`, or HTTP basic with "
                "the token as the password (any user name). Scopes: `read`, `upload` (includes "
                "read), `build` (includes read), `admin` (includes all). Each operation's "
                "`x-wheelfarm-scope` and security requirement name the scope it needs.\n\n"
                'Errors: every error under /api/ is JSON, `{"error": "<one line>", '
                '"status": <code>}`, with the same reason in the status line.\n\n'
                "Text must not hold NUL characters (400); in worker messages they become U+FFFD."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "meta"},
            {"name": "index"},
            {"name": "files"},
            {"name": "tokens"},
            {"name": "audit"},
            {"name": "builds"},
            {"name": "worker protocol", "description": protocol.__doc__ or ""},
        ],
        "paths": _paths(sorted(platforms)),
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A wheelfarm token (or the server's admin token).",
                },
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The token as the password, with any user name (as twine).",
                },
            },
        },
    }
