"""The admin API of a platform's life (index_server/platform_lifecycle.py) and of tracked
projects (index_server/tracking.py)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from packaging.utils import canonicalize_name

from index_server import platform_lifecycle as lifecycle
from index_server import tracking
from index_server.views.common import fail, get_platform, has_nul, require, require_read, services

bp = Blueprint("platforms_api", __name__, url_prefix="/api")


def _action(call, *args):  # type: ignore[no-untyped-def]
    try:
        return call(services(), *args)
    except lifecycle.PlatformActionError as exc:
        fail(409, str(exc))


@bp.get("/platforms/<platform>")
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
def backfill(platform: str) -> Response:
    who = require("admin")
    return jsonify(_action(lifecycle.backfill, get_platform(platform).name, who.name))


@bp.post("/platforms/<platform>/rebuild-stale")
def rebuild_stale(platform: str) -> Response:
    who = require("admin")
    name = get_platform(platform).name
    return jsonify(
        {"platform": name, "queued": lifecycle.rebuild_stale(services(), name, who.name)}
    )


@bp.delete("/platforms/<platform>/files")
def delete_files(platform: str) -> Response:
    """A retired platform's files; also one whose TOML is gone (so no get_platform)."""
    who = require("admin")
    if has_nul(platform) or len(platform) > 100:
        fail(400, "invalid platform name")
    deleted = _action(lifecycle.delete_platform_files, platform, who.name)
    return jsonify({"platform": platform, "deleted": deleted})


@bp.get("/tracked")
def list_tracked() -> Response:
    require_read()
    return jsonify({"tracked": tracking.list_tracked(services())})


@bp.post("/tracked")
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
def untrack(project: str) -> Response:
    who = require("admin")
    name = canonicalize_name(project)
    if len(name) > 200 or not tracking.untrack(services(), name, who.name):
        fail(404, f"{name} is not tracked")
    return jsonify({"untracked": name})
