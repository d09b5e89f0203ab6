"""The admin API of the builder farm: builds, skip list, build settings, workers."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from builder import protocol
from index_server import jobs, resolutions
from index_server import openapi as spec
from index_server.jobs import STATES, write_only
from index_server.views.common import (
    fail,
    get_platform,
    has_nul,
    project_name,
    require,
    require_read,
    services,
    valid_name,
)

bp = Blueprint("builds_api", __name__, url_prefix="/api")


def _body() -> dict:  # type: ignore[type-arg]
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        fail(400, "request body must be a JSON object")
    if has_nul(body):
        fail(400, "NUL characters are not allowed")
    return body


def _text(body: dict, key: str, required: bool = True) -> str:  # type: ignore[type-arg]
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        fail(400, f"'{key}' must be a non-empty string")
    return value.strip()


def _project(name: str) -> str:
    """The canonical name of a valid one (a 422 otherwise)."""
    return project_name(name, 422)


def _version(version: str) -> str:
    if len(version) > 100:
        fail(400, "a version has at most 100 characters")
    return version


def _job_call(call, *args):  # type: ignore[no-untyped-def]
    try:
        return jsonify(call(services(), *args))
    except jobs.JobNotFound as exc:
        fail(404, str(exc))
    except jobs.JobError as exc:
        fail(409, str(exc))


@bp.get("/builds")
@spec.operation(
    "listBuilds",
    "builds",
    "Build jobs, newest first, optionally filtered",
    "read",
    {"200": spec.ok(spec.array_of("builds", spec.ref("Build")))},
    errors=[404],
    parameters=[
        spec.query_param("state", {"type": "string", "enum": list(STATES)}, "only this state"),
        spec.query_param("platform", spec.PLATFORM_NAME, "only this platform (404 if unknown)"),
        spec.query_param("project", {"type": "string"}, "only this project"),
        spec.query_param(
            "kind", {"type": "string", "enum": list(protocol.JOB_KINDS)}, "only this kind of job"
        ),
        spec.query_param(
            "limit",
            {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100},
            "at most this many (larger values count as 1000)",
        ),
    ],
)
def list_builds() -> Response:
    require_read()
    state = request.args.get("state")
    if state and state not in STATES:
        fail(400, f"'state' must be one of {', '.join(STATES)}")
    platform = request.args.get("platform")
    if platform:
        get_platform(platform)
    project = request.args.get("project")
    try:
        limit = min(int(request.args.get("limit", "100")), 1000)
    except ValueError:
        fail(400, "'limit' must be a number")
    if limit < 0:
        fail(400, "'limit' must not be negative")
    kind = request.args.get("kind")
    if kind and kind not in protocol.JOB_KINDS:
        fail(400, f"'kind' must be one of {', '.join(protocol.JOB_KINDS)}")
    found = jobs.list_jobs(
        services(), state, platform, canonicalize_name(project) if project else None, limit, kind
    )
    return jsonify({"builds": found})


@bp.post("/builds")
@spec.operation(
    "requestBuilds",
    "builds",
    "Queue a build of a project version for one or more platforms",
    "upload",
    {"200": spec.ok(spec.array_of("requests", spec.ref("BuildRequestOutcome")))},
    errors=[404],
    body=spec.json_body(
        spec.obj(
            {
                "project": spec.NAME,
                "version": {"type": "string", "minLength": 1, "maxLength": 100},
                "platforms": {
                    "type": "array",
                    "minItems": 1,
                    "items": spec.PLATFORM_NAME,
                },
            }
        )
    ),
    description="Never queues twice: an existing job or an existing wheel for the "
    "platform is reported instead. `version` must be a PEP 440 version.",
)
def request_builds() -> Response:
    """Queue a build of (project, version) for one or more platforms."""
    who = require("upload")
    body = _body()
    project = _project(_text(body, "project"))
    if not who.may_write(project):
        fail(403, f"this token may not write project {project!r} (its project scope)")
    try:
        version = _version(str(Version(_text(body, "version"))))
    except InvalidVersion:
        fail(400, "'version' is not a valid PEP 440 version")
    names = body.get("platforms")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        fail(400, "'platforms' must be a non-empty list of platform names")
    platforms = [get_platform(n).name for n in names]
    if retired := [n for n in platforms if services().platforms[n].retired]:
        fail(400, f"retired platforms build nothing new: {', '.join(retired)}")
    outcomes = [
        jobs.request_build(services(), project, version, p, "request", who.name).__dict__
        for p in platforms
    ]
    return jsonify({"requests": outcomes})


@bp.post("/resolutions")
@spec.operation(
    "requestResolution",
    "builds",
    "Resolve a requirements file for a platform, on a worker of that platform",
    "upload",
    {"200": spec.ok(spec.ref("ResolutionRequest"))},
    errors=[404, 413],
    body=spec.json_body(
        spec.obj(
            {
                "platform": spec.PLATFORM_NAME,
                "requirements": {"type": "string", "minLength": 1},
                "constraints": {"type": "string"},
            },
            required=("platform", "requirements"),
        )
    ),
    description="Queues a resolution job (kind `resolve`; poll `GET /api/builds/{job_id}`), "
    "or answers the stored closure of the same inputs (`reused`: true) while it is fresh. "
    "`requirements` is a requirements file's text with its `-r` includes inlined; lines are "
    "PEP 508 requirements, optionally with `--hash`. 400 for a line that does not parse "
    "(named), 404 for an unknown platform, 413 past WHEELFARM_MAX_REQUIREMENTS_BYTES.",
)
def request_resolution() -> Response:
    who = require("upload")
    body = _body()
    name = body.get("platform")
    if not isinstance(name, str) or not name:
        fail(400, "'platform' must be a platform's name")
    platform = get_platform(name)
    if platform.retired:
        fail(400, f"retired platforms build nothing new: {platform.name}")
    requirements, constraints = body.get("requirements"), body.get("constraints", "")
    if not isinstance(requirements, str) or not isinstance(constraints, str):
        fail(400, "'requirements' and 'constraints' must be strings")
    try:
        requirements, constraints = resolutions.check_inputs(services(), requirements, constraints)
    except resolutions.RequirementsTooLarge as exc:
        fail(413, str(exc))
    except resolutions.RequirementsError as exc:
        fail(400, str(exc))
    asked = resolutions.request_resolution(
        services(), platform, requirements, constraints, who.name
    )
    return jsonify({"resolution": asked.job, "reused": asked.reused})


@bp.get("/builds/<int:job_id>")
@spec.operation(
    "getBuild",
    "builds",
    "A build job, with its log (a resolution job: with its inputs and closure too)",
    "read",
    {"200": spec.ok(spec.ref("Resolution"))},
    errors=[404],
    parameters=[spec.JOB_ID],
)
def show_build(job_id: int) -> Response:
    require_read()
    return _job_call(resolutions.get_job_with_inputs, job_id)


@bp.post("/builds/<int:job_id>/rebuild")
@spec.operation(
    "rebuildBuild",
    "builds",
    "Queue a finished (succeeded, failed, skipped, cancelled) job again",
    "admin",
    {"200": spec.ok(spec.ref("Build"))},
    errors=[404, 409],
    parameters=[spec.JOB_ID],
)
def rebuild(job_id: int) -> Response:
    who = require("admin")
    return _job_call(jobs.rebuild, job_id, who.name)


@bp.post("/builds/<int:job_id>/cancel")
@spec.operation(
    "cancelBuild",
    "builds",
    "Cancel a queued or running job",
    "admin",
    {"200": spec.ok(spec.ref("Build"))},
    errors=[404, 409],
    parameters=[spec.JOB_ID],
    body=spec.json_body(spec.obj(spec.REASON, required=()), required=False),
)
def cancel(job_id: int) -> Response:
    who = require("admin")
    reason = _body().get("reason")
    return _job_call(jobs.cancel, job_id, who.name, reason if isinstance(reason, str) else None)


@bp.post("/builds/<int:job_id>/skip")
@spec.operation(
    "skipBuild",
    "builds",
    "Mark a queued, failed or cancelled job as skipped",
    "admin",
    {"200": spec.ok(spec.ref("Build"))},
    errors=[404, 409],
    parameters=[spec.JOB_ID],
    body=spec.json_body(spec.obj({"reason": {"type": "string", "minLength": 1}})),
)
def skip(job_id: int) -> Response:
    who = require("admin")
    return _job_call(jobs.skip_job, job_id, who.name, _text(_body(), "reason"))


@bp.get("/skips")
@spec.operation(
    "listSkips",
    "builds",
    "The skip list: projects (version empty) and versions never built",
    "read",
    {"200": spec.ok(spec.array_of("skips", spec.ref("Skip")))},
)
def list_skips() -> Response:
    require_read()
    return jsonify({"skips": jobs.list_skips(services())})


@bp.post("/skips")
@spec.operation(
    "addSkip",
    "builds",
    "Put a project or one version on the skip list; its queued jobs are skipped",
    "admin",
    {
        "201": spec.ok(
            spec.obj({"project": {"type": "string"}, "version": spec.nullable("string")}),
            "On the skip list",
        )
    },
    body=spec.json_body(
        spec.obj(
            {
                "project": spec.NAME,
                "version": {"type": ["string", "null"], "maxLength": 100},
                "reason": {"type": "string", "minLength": 1},
            },
            required=["project", "reason"],
        )
    ),
)
def add_skip() -> Response:
    who = require("admin")
    body = _body()
    project = _project(_text(body, "project"))
    version = _version(_text(body, "version", required=False))
    jobs.add_skip(services(), project, version, _text(body, "reason"), who.name)
    return jsonify({"project": project, "version": version or None}), 201


@bp.delete("/skips/<project>")
@spec.operation(
    "removeSkip",
    "builds",
    "Take a project (or, with `version`, one version) off the skip list",
    "admin",
    {"200": spec.ok(spec.obj({"removed": {"type": "string"}, "version": spec.nullable("string")}))},
    errors=[404],
    parameters=[
        spec.PROJECT,
        spec.query_param("version", {"type": "string"}, "the version; none: the whole project"),
    ],
)
def remove_skip(project: str) -> Response:
    who = require("admin")
    version = request.args.get("version", "")
    if not valid_name(project) or len(version) > 100:
        fail(404, "not on the skip list")
    if not jobs.remove_skip(services(), canonicalize_name(project), version, who.name):
        fail(404, "not on the skip list")
    return jsonify({"removed": canonicalize_name(project), "version": version or None})


SETTINGS_ANSWER = spec.obj({"project": {"type": "string"}, "settings": spec.ref("BuildSettings")})


@bp.get("/build-settings/<project>")
@spec.operation(
    "getBuildSettings",
    "builds",
    "A project's build settings (empty if none)",
    "read",
    {"200": spec.ok(SETTINGS_ANSWER)},
    parameters=[spec.PROJECT],
)
def get_settings(project: str) -> Response:
    require_read()
    name = project_name(project)
    settings = write_only(jobs.get_project_settings(services(), name))
    return jsonify({"project": name, "settings": settings})


@bp.put("/build-settings/<project>")
@spec.operation(
    "putBuildSettings",
    "builds",
    "Replace a project's build settings",
    "admin",
    {"200": spec.ok(SETTINGS_ANSWER)},
    parameters=[spec.PROJECT],
    body=spec.json_body(spec.ref("BuildSettings")),
)
def put_settings(project: str) -> Response:
    who = require("admin")
    try:
        settings = protocol.validate(_body(), protocol.BUILD_SETTINGS)
    except protocol.ProtocolError as exc:
        fail(400, f"invalid build settings: {exc}")
    name = project_name(project)
    jobs.set_project_settings(services(), name, settings, who.name)
    return jsonify({"project": name, "settings": write_only(settings)})


@bp.get("/workers")
@spec.operation(
    "listWorkers",
    "builds",
    "Workers as last seen through their claims and heartbeats",
    "read",
    {"200": spec.ok(spec.array_of("workers", spec.ref("Worker")))},
)
def list_workers() -> Response:
    require_read()
    return jsonify({"workers": jobs.list_workers(services())})
