"""The OpenAPI 3.1 description of the JSON API under /api/, served at /api/openapi.json, made
from the routes themselves.

Each view under /api/ carries its own operation, registered next to it with
:func:`operation`; the path and method come from the Flask rule, so nothing here repeats a
route. To describe a new route, put ``@spec.operation(...)`` between the route decorator and
the function (``from index_server import openapi as spec``)::

    @bp.get("/owners/<project>")
    @spec.operation(
        "listOwners",                      # operationId
        "owners",                          # tag (a new one goes in openapi_document's tags)
        "A project's owners",              # summary
        "read",                            # scope: None (public), "read", "upload", ...
        {"200": spec.ok(spec.array_of("owners", spec.ref("Owner")))},
        errors=[404],                      # 401/403 follow from the scope, 400 from a body,
        parameters=[spec.PROJECT],         # a query or a text in the path
        body=spec.json_body(...),          # the request body's schema, if any
    )
    def owners(project: str) -> Response: ...

Response shapes shared by several routes are components (``_schemas()`` below, referenced with
``spec.ref(name)``); the worker protocol's message schemas (``builder.protocol``) are
embedded as they are, not copied: the server validates worker messages against the very
schemas this document shows. ``tests/test_openapi.py`` checks that every route under /api/
is described, and runs schemathesis against the app with this document.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any, TypeVar

from flask import Flask

from builder import protocol
from index_server.auth import SCOPES
from index_server.jobs import STATES

JSON = "application/json"
Schema = dict[str, Any]

# How each operation is authorised: None = public; "read" = the read scope, needed only when
# the server sets WHEELFARM_READ_REQUIRES_TOKEN; else the scope the token must allow.
_SCOPE_NOTE = {
    None: "Public: no token needed.",
    "read": "Needs a token with the `read` scope only when the server sets "
    "WHEELFARM_READ_REQUIRES_TOKEN; otherwise public.",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(type_: str, **more: Any) -> Schema:
    return {"type": [type_, "null"], **more}


def obj(properties: dict[str, Schema], required: Iterable[str] | None = None) -> Schema:
    """An object; every listed property is required unless ``required`` says otherwise."""
    return {
        "type": "object",
        "required": list(properties if required is None else required),
        "properties": properties,
    }


def array_of(name: str, item: Schema) -> Schema:
    return obj({name: {"type": "array", "items": item}})


TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
NAME = {"type": "string", "minLength": 1, "maxLength": 200}


def _schemas() -> dict[str, Schema]:
    build_result = obj(
        {
            "wheels": {"type": "array", "items": {"type": "string"}},
            "shared_libraries": {"type": "array", "items": {"type": "string"}},
            "os_packages": {"type": "array", "items": {"type": "string"}},
            "os_packages_closure": {"type": "array", "items": {"type": "string"}},
            "compiled": {"type": ["boolean", "null"]},
            # a resolution's (kind "resolve")
            "closure": {"type": "array", "items": copy.deepcopy(protocol.CLOSURE_ITEM)},
            "pages": {"type": "object", "additionalProperties": {"type": "string"}},
            "builds": {"type": "array", "items": ref("BuildRequestOutcome")},
        },
        required=(),
    )
    build = obj(
        {
            "id": {"type": "integer"},
            "kind": {"type": "string", "enum": list(protocol.JOB_KINDS)},
            "project": {"type": "string"},
            "version": {"type": "string"},
            "platform": {"type": "string"},
            "state": {"type": "string", "enum": list(STATES)},
            "source": {"type": "string", "description": "first-sight, request, warm, rebuild"},
            "requested_by": {"type": "string"},
            "requested_at": TIME,
            "attempts": {"type": "integer", "minimum": 0},
            "not_before": TIME_OR_NULL,
            "worker": nullable("string"),
            "lease_expires_at": TIME_OR_NULL,
            "started_at": TIME_OR_NULL,
            "finished_at": TIME_OR_NULL,
            "waited_seconds": nullable("number"),
            "build_seconds": nullable("number"),
            "image_id": nullable("string"),
            "error_category": nullable("string"),
            "error_summary": nullable("string"),
            "reason": nullable("string", description="why skipped or cancelled"),
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
        "Platform": obj(
            {
                "name": {"type": "string"},
                "os": {"type": "string"},
                "release": {"type": "string"},
                "python": {"type": "string", "examples": ["3.11"]},
                "arch": {"type": "string"},
                "glibc": {"type": "string"},
                "base_image": {"type": "string"},
                "manylinux": {"type": "boolean"},
                "emulated": {
                    "type": "boolean",
                    "description": "built under qemu-user on a host of another architecture",
                },
                "retired": {
                    "type": "boolean",
                    "description": "builds nothing new; its files stay readable until deleted",
                },
                "build_timeout": {"type": ["number", "null"], "description": "seconds"},
                "slowdown": {
                    "type": "number",
                    "description": "times native: stretches the lease and the check steps",
                },
                "platform_tags": {"type": "array", "items": {"type": "string"}},
                "tags_count": {"type": "integer"},
                "best_tag": {"type": "string"},
            }
        ),
        "ProjectSummary": obj(
            {
                "name": {"type": "string", "description": "canonical (PEP 503)"},
                "display_name": {"type": "string"},
                "files": {"type": "integer", "minimum": 0},
            }
        ),
        "File": obj(
            {
                "id": {"type": "integer"},
                "project": {"type": "string"},
                "filename": {"type": "string"},
                "version": {"type": "string"},
                "platform": nullable("string", description="null: every platform"),
                "packagetype": {"type": "string", "enum": ["sdist", "bdist_wheel"]},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "size": {"type": "integer", "minimum": 0},
                "requires_python": nullable("string"),
                "yanked": {"type": "boolean"},
                "yanked_reason": nullable("string"),
                "uploaded_at": TIME,
                "uploaded_by": {"type": "string"},
                "origin": {"type": "string", "enum": ["upload", "build"]},
                "url": {"type": "string"},
            }
        ),
        "Token": obj(
            {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "scope": {"type": "string", "enum": list(SCOPES)},
                "prefix": {"type": "string"},
                "created_at": TIME,
                "revoked": {"type": "boolean"},
            }
        ),
        "Event": obj(
            {
                "id": {"type": "integer"},
                "at": TIME,
                "actor": {"type": "string"},
                "action": {"type": "string"},
                "project": nullable("string"),
                "filename": nullable("string"),
                "detail": nullable("string"),
            }
        ),
        "Build": build,
        "Resolution": {
            **build,
            "properties": {
                **build["properties"],
                "requirements": {"type": "string"},
                "constraints": {"type": "string"},
            },
        },
        "ResolutionRequest": obj({"resolution": ref("Build"), "reused": {"type": "boolean"}}),
        "BuildRequestOutcome": obj(
            {
                "project": {"type": "string"},
                "version": {"type": "string"},
                "platform": {"type": "string"},
                "outcome": {"type": "string", "enum": ["queued", "exists", "has_wheel", "skipped"]},
                "job_id": nullable("integer"),
                "state": {"type": ["string", "null"], "enum": [*STATES, None]},
            }
        ),
        "Skip": obj(
            {
                "id": {"type": "integer"},
                "project": {"type": "string"},
                "version": {"type": "string", "description": "empty: every version"},
                "reason": {"type": "string"},
                "created_at": TIME,
                "created_by": {"type": "string"},
            }
        ),
        "UploadedWheel": obj(
            {
                "filename": {"type": "string"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "created": {"type": "boolean", "description": "false: already stored"},
                "platform": nullable("string"),
            },
            required=("filename", "sha256", "created"),
        ),
        "Worker": obj(
            {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "platforms": {"type": "array", "items": {"type": "string"}},
                "runner": {"type": "string"},
                "first_seen": TIME,
                "last_seen": TIME,
                "current_job": nullable("integer"),
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
    "413": "The upload or JSON body is larger than the server accepts.",
    "422": "A well-formed request whose values cannot be taken (e.g. an unknown platform).",
}


def _responses() -> dict[str, Schema]:
    error = {JSON: {"schema": ref("Error")}}
    responses: dict[str, Schema] = {
        code: {"description": text, "content": error} for code, text in _ERRORS.items()
    }
    responses["401"]["headers"] = {
        "WWW-Authenticate": {"schema": {"type": "string"}, "required": True}
    }
    return responses


def ok(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def json_body(schema: Schema, required: bool = True) -> Schema:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def path_id(name: str, what: str) -> Schema:
    # werkzeug's int converter: digits only; ids are 32-bit database keys.
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"the {what}'s id",
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
    }


def path_text(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^/]+$"},
    }


def query_param(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "description": description, "schema": schema}


# Parameters and bodies several routes share.
FILE_ID = path_id("file_id", "file")
JOB_ID = path_id("job_id", "build job")
PROJECT = path_text("project", "the project's name (any spelling; canonicalised)")
REASON = {"reason": {"type": ["string", "null"]}}
# A platform's name: the configured names as an enum, filled in when the document is made.
PLATFORM_NAME: Schema = {"x-wheelfarm-platform-name": True}

View = TypeVar("View", bound=Callable[..., Any])


def operation(
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
) -> Callable[[View], View]:
    """Describe the view below as one operation: its answers, the scope it needs (None:
    public) with its security and error answers, its parameters and body; see the module's
    docstring."""
    parameters = list(parameters)
    codes = [*errors, *((401, 403) if scope else ())]
    # A body, a query or a text in the path can be malformed (or hold a NUL): 400.
    texts = [p for p in parameters if p["in"] == "query" or p["schema"].get("type") == "string"]
    if body is not None or texts:
        codes.append(400)
    if body is not None:
        # Every body has a size limit (uploads their own, JSON WHEELFARM_MAX_JSON_BYTES), and a
        # well-formed one can hold values the server cannot take.
        codes += [413, 422]
    # A name in the path that is no valid name (PEP 508, its length) names nothing: 404.
    if any(p["in"] == "path" and p["schema"].get("type") == "string" for p in parameters):
        codes.append(404)
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

    def mark(view: View) -> View:
        view.openapi_operation = op  # type: ignore[attr-defined]
        return view

    return mark


def _openapi_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: ``/files/<int:file_id>`` -> ``/files/{file_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _with_platforms(value: Any, platform_name: Schema) -> Any:
    if value == PLATFORM_NAME:
        return copy.deepcopy(platform_name)
    if isinstance(value, dict):
        return {k: _with_platforms(v, platform_name) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_platforms(v, platform_name) for v in value]
    return value


def _paths(app: Flask, platforms: list[str]) -> dict[str, Schema]:
    """Every described view of the app, by OpenAPI path and method."""
    platform_name: Schema = {"type": "string", "minLength": 1}
    if platforms:
        platform_name = {"type": "string", "enum": platforms}
    paths: dict[str, Schema] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        described = getattr(app.view_functions[rule.endpoint], "openapi_operation", None)
        if described is None:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            item = paths.setdefault(_openapi_path(rule.rule), {})
            item[method.lower()] = _with_platforms(described, platform_name)
    return paths


def _version() -> str:
    try:
        return metadata.version("wheelfarm")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


def openapi_document(app: Flask, platforms: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app's described routes; ``platforms`` (the configured
    names) become enums."""
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
        "paths": _paths(app, sorted(platforms)),
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
