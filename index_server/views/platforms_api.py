"""The admin API of a platform's life (index_server/platform_lifecycle.py) and of tracked
projects (index_server/tracking.py)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from packaging.utils import canonicalize_name

from index_server import openapi as spec
from index_server import platform_lifecycle as lifecycle
from index_server import tracking
from index_server.views.common import fail, get_platform, has_nul, require, require_read, services

bp = Blueprint("platforms_api", __name__, url_prefix="/api")

_PLATFORM = {
    "name": "platform",
    "in": "path",
    "required": True,
    "description": "the platform's name",
    "schema": spec.PLATFORM_NAME,
}
_ANY_PLATFORM = {**_PLATFORM, "schema": {"type": "string", "minLength": 1, "maxLength": 100}}
_PROGRESS = spec.obj(
    {
        "platform": {"type": "string"},
        "states": {"type": "object", "additionalProperties": {"type": "integer"}},
        "total": {"type": "integer"},
        "done": {"type": "integer"},
        "backfilled_at": spec.TIME_OR_NULL,
    }
)
_QUEUED_JOB = spec.obj(
    {
        "project": {"type": "string"},
        "version": {"type": "string"},
        "job_id": {"type": "integer"},
    }
)
_TRACKED = spec.obj(
    {
        "project": {"type": "string"},
        "explicit": {"type": "boolean", "description": "false: tracked as a built project"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platforms": {"type": "array", "items": {"type": "string"}},
        "checked_at": spec.TIME_OR_NULL,
        "created_at": spec.TIME,
        "created_by": {"type": "string"},
    }
)


def _action(call, *args):  # type: ignore[no-untyped-def]
    try:
        return call(services(), *args)
    except lifecycle.PlatformActionError as exc:
        fail(409, str(exc))


@bp.get("/platforms/<platform>")
@spec.operation(
    "getPlatform",
    "platforms",
    "A platform with its current build image, stale wheels and backfill progress",
    "read",
    {
        "200": spec.ok(
            {
                "allOf": [
                    spec.ref("Platform"),
                    spec.obj(
                        {
                            "image_id": spec.nullable("string"),
                            "image_seen_at": spec.TIME_OR_NULL,
                            "stale_wheels": {"type": "integer"},
                            "wheels": {"type": "integer"},
                            "backfill": _PROGRESS,
                        }
                    ),
                ]
            }
        )
    },
    errors=[404],
    parameters=[_PLATFORM],
)
def show_platform(platform: str) -> Response:
    require_read()
    plat = get_platform(platform)
    svc = services()
    return jsonify(
        {
            **plat.to_json(),
            **lifecycle.platform_status(svc, plat.name),
            "backfill": lifecycle.backfill_progress(svc, plat.name),
        }
    )


@bp.post("/platforms/<platform>/backfill")
@spec.operation(
    "backfillPlatform",
    "platforms",
    "Queue builds of every project/version with wheels on another platform, most downloaded first",
    "admin",
    {
        "200": spec.ok(
            spec.obj(
                {
                    "platform": {"type": "string"},
                    "queued": {"type": "array", "items": _QUEUED_JOB},
                    "progress": _PROGRESS,
                }
            )
        )
    },
    errors=[404, 409],
    parameters=[_PLATFORM],
    description="409: the platform is retired.",
)
def backfill(platform: str) -> Response:
    who = require("admin")
    return jsonify(_action(lifecycle.backfill, get_platform(platform).name, who.name))


@bp.post("/platforms/<platform>/rebuild-stale")
@spec.operation(
    "rebuildStale",
    "platforms",
    "Queue again the platform's wheels built on an older build image",
    "admin",
    {
        "200": spec.ok(
            spec.obj(
                {
                    "platform": {"type": "string"},
                    "queued": {"type": "array", "items": {"type": "integer"}},
                }
            )
        )
    },
    errors=[404],
    parameters=[_PLATFORM],
)
def rebuild_stale(platform: str) -> Response:
    who = require("admin")
    name = get_platform(platform).name
    return jsonify(
        {"platform": name, "queued": lifecycle.rebuild_stale(services(), name, who.name)}
    )


@bp.delete("/platforms/<platform>/files")
@spec.operation(
    "deletePlatformFiles",
    "platforms",
    "Delete a retired (or no longer defined) platform's own files",
    "admin",
    {
        "200": spec.ok(
            spec.obj(
                {
                    "platform": {"type": "string"},
                    "deleted": {"type": "array", "items": {"type": "string"}},
                }
            )
        )
    },
    errors=[409],
    parameters=[_ANY_PLATFORM],
    description="409: the platform is defined and not retired.",
)
def delete_files(platform: str) -> Response:
    """A retired platform's files; also one whose TOML is gone (so no get_platform)."""
    who = require("admin")
    if has_nul(platform) or len(platform) > 100:
        fail(400, "invalid platform name")
    deleted = _action(lifecycle.delete_platform_files, platform, who.name)
    return jsonify({"platform": platform, "deleted": deleted})


@bp.get("/tracked")
@spec.operation(
    "listTracked",
    "platforms",
    "Projects whose new upstream releases are built before anyone asks",
    "read",
    {"200": spec.ok(spec.array_of("tracked", _TRACKED))},
)
def list_tracked() -> Response:
    require_read()
    return jsonify({"tracked": tracking.list_tracked(services())})


@bp.post("/tracked")
@spec.operation(
    "trackProject",
    "platforms",
    "Track a project: its upstream versions now are the baseline, later ones are "
    "built on every platform it has wheels for",
    "admin",
    {
        "201": spec.ok(
            spec.obj(
                {
                    "project": {"type": "string"},
                    "versions": {"type": "array", "items": {"type": "string"}},
                }
            ),
            "Tracked",
        )
    },
    body=spec.json_body(spec.obj({"project": spec.NAME})),
)
def track() -> Response:
    who = require("admin")
    body = request.get_json(silent=True) if request.data else None
    project = body.get("project") if isinstance(body, dict) else None
    if not isinstance(project, str) or not project.strip() or has_nul(project):
        fail(400, "'project' must be a non-empty string")
    name = canonicalize_name(project)
    if len(name) > 200:
        fail(400, "a project name has at most 200 characters")
    return jsonify(tracking.track(services(), name, who.name)), 201


@bp.delete("/tracked/<project>")
@spec.operation(
    "untrackProject",
    "platforms",
    "Stop tracking a project",
    "admin",
    {"200": spec.ok(spec.obj({"untracked": {"type": "string"}}))},
    errors=[404],
    parameters=[spec.PROJECT],
)
def untrack(project: str) -> Response:
    who = require("admin")
    name = canonicalize_name(project)
    if len(name) > 200 or not tracking.untrack(services(), name, who.name):
        fail(404, f"{name} is not tracked")
    return jsonify({"untracked": name})
