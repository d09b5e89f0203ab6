"""The worker protocol's HTTP side (see builder.protocol): /api/worker/..., build scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request
from packaging.version import Version
from sqlalchemy import select

from builder import protocol
from index_server import admin, jobs, platform_lifecycle, repository, resolutions
from index_server import openapi as spec
from index_server.auth import Identity
from index_server.db.engine import read_connection
from index_server.db.schema import ALL_PLATFORMS, files
from index_server.distributions import InvalidDistribution, parse_filename
from index_server.views.common import fail, require, services
from index_server.views.upload import store_upload

bp = Blueprint("worker_api", __name__, url_prefix="/api/worker")


def _without_nul(value: Any) -> Any:
    """Worker messages carry build output: a NUL (which PostgreSQL cannot store) becomes U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _message(schema: dict) -> dict:  # type: ignore[type-arg]
    try:
        return protocol.validate(_without_nul(request.get_json(silent=True)), schema)
    except protocol.ProtocolError as exc:
        fail(400, f"invalid message: {exc}")


def _job_errors(exc: jobs.JobError) -> None:
    if isinstance(exc, jobs.JobNotFound):
        fail(404, str(exc))
    if isinstance(exc, jobs.LeaseLost):
        fail(409, str(exc))
    fail(409, str(exc))


def _bound(who: Identity, platforms: list[str], worker: str | None) -> None:
    """A build token bound to a platform (and a worker name) acts only within them."""
    if who.platform and any(p != who.platform for p in platforms):
        fail(403, f"this build token is bound to platform {who.platform!r}")
    if who.worker and worker is not None and worker != who.worker:
        fail(403, f"this build token is bound to worker {who.worker!r}")


def _held(job_id: int) -> Identity:
    """The build token, allowed to act on this job (its platform and worker)."""
    who = require("build")
    if who.platform or who.worker:
        try:
            job = jobs.get_job(services(), job_id, with_log=False)
        except jobs.JobNotFound as exc:
            fail(404, str(exc))
        _bound(who, [job["platform"]], job["worker"])
    return who


@bp.post("/claim")
@spec.operation(
    "claimJob",
    "worker protocol",
    "Claim the oldest ready job of these platforms, with a lease",
    "build",
    {
        "200": spec.ok(spec.ref("Job"), "A job, leased to this worker"),
        "204": {"description": "No work for these platforms now"},
    },
    body=spec.json_body(spec.ref("Claim")),
)
def claim() -> Response:
    who = require("build")
    message = _message(protocol.CLAIM)
    svc = services()
    unknown = [p for p in message["platforms"] if p not in svc.platforms]
    if unknown:
        fail(400, f"unknown platforms: {', '.join(unknown)}")
    _bound(who, message["platforms"], message["worker"])
    # A retired platform's queued jobs wait (its files stay readable; nothing new is built).
    active = [p for p in message["platforms"] if not svc.platforms[p].retired]
    if not active:
        return Response(status=204)
    job = jobs.claim(
        svc,
        message["worker"],
        active,
        message.get("runner", "podman"),
        message.get("kinds", protocol.JOB_KINDS),
    )
    if job is None:
        return Response(status=204)
    return jsonify(job)


@bp.post("/jobs/<int:job_id>/heartbeat")
@spec.operation(
    "heartbeat",
    "worker protocol",
    "Renew the lease; `cancel` true asks the worker to stop",
    "build",
    {"200": spec.ok(spec.ref("HeartbeatReply"))},
    errors=[404, 409],
    parameters=[spec.JOB_ID],
    body=spec.json_body(spec.ref("Heartbeat")),
    description="409: the lease is no longer valid; the worker must stop.",
)
def heartbeat(job_id: int) -> Response:
    _held(job_id)
    message = _message(protocol.HEARTBEAT)
    svc = services()
    try:
        cancel = jobs.heartbeat(svc, job_id, message["lease"])
    except jobs.JobError as exc:
        _job_errors(exc)
    return jsonify({"lease_seconds": svc.settings.build_lease_seconds, "cancel": cancel})


@bp.post("/jobs/<int:job_id>/log")
@spec.operation(
    "appendLog",
    "worker protocol",
    "Append text to the job's log",
    "build",
    {"204": {"description": "Appended"}},
    errors=[404, 409],
    parameters=[spec.JOB_ID],
    body=spec.json_body(spec.ref("Log")),
)
def log(job_id: int) -> Response:
    _held(job_id)
    message = _message(protocol.LOG)
    try:
        jobs.append_log(services(), job_id, message["lease"], message["text"])
    except jobs.JobError as exc:
        _job_errors(exc)
    return Response(status=204)


@bp.post("/jobs/<int:job_id>/wheels")
@spec.operation(
    "uploadBuiltWheel",
    "worker protocol",
    "Upload a wheel the job built (through the same checks as uploads)",
    "build",
    {
        "201": spec.ok(spec.ref("UploadedWheel"), "Stored"),
        "200": spec.ok(spec.ref("UploadedWheel"), "Already stored, the same bytes"),
    },
    errors=[404, 409, 413],
    parameters=[spec.JOB_ID],
    body={
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": spec.obj(
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
def upload_wheel(job_id: int) -> Response:
    who = _held(job_id)
    svc = services()
    try:
        job = jobs.check_lease(svc, job_id, request.form.get("lease", ""))
    except jobs.JobError as exc:
        _job_errors(exc)
    content = request.files.get("content")
    if content is None or not content.filename or Path(content.filename).name != content.filename:
        fail(400, "missing or invalid 'content' file field")
    if not content.filename.endswith(".whl"):
        fail(400, "a build uploads wheels only")
    _job_wheel_only(svc, job, content.filename)
    earlier = _earlier_attempts_wheel(svc, job, content.filename)
    if earlier is not None and platform_lifecycle.replaces_stale(job, earlier):
        # A rebuild after an image change: the new wheel replaces the one from the old image.
        # The server asked for this rebuild, so the name may take the new bytes (no tombstone).
        actor = f"{who.name} ({job['worker']}, job {job_id})"
        admin.delete_file(svc, earlier.id, actor, tombstone=False)
        earlier = None
    if earlier is not None:
        # Builds are not byte-for-byte reproducible: a worker that died after uploading left
        # this job's wheel already. Files are immutable; that one (import-checked) stays.
        return jsonify(
            {
                "filename": earlier.filename,
                "sha256": earlier.sha256,
                "created": False,
                "platform": earlier.platform or None,
                "kept": "the wheel an earlier attempt of this job uploaded",
            }
        )
    return store_upload(
        svc.platforms[job["platform"]],
        content,
        content.filename,
        actor=f"{who.name} ({job['worker']}, job {job_id})",
        claimed_digests={"sha256": request.form.get("sha256_digest", "")},
        claimed_name=job["project"],
        claimed_version=job["version"],
        origin="build",
        build_job_id=job_id,
    )


def _job_wheel_only(svc, job: dict, filename: str) -> None:  # type: ignore[no-untyped-def]
    """A build uploads the wheel of its job: that project and version (a binary one for the
    job's platform, which ingest checks), and one per job."""
    try:
        dist = parse_filename(filename)
    except InvalidDistribution as exc:
        fail(400, str(exc))
    if dist.project != job["project"] or dist.version != Version(job["version"]):
        fail(
            403,
            f"{filename} is not a wheel of this job ({job['project']} {job['version']} "
            f"for {job['platform']})",
        )
    platform = svc.platforms.get(job["platform"])
    if platform is not None and not platform.accepts_wheel(filename):
        fail(400, f"{filename} cannot be installed on platform {job['platform']}, this job's")
    with read_connection(svc.engine) as conn:
        uploaded = conn.execute(
            select(files.c.filename).where(
                files.c.build_job_id == job["id"], files.c.filename != filename
            )
        ).first()
    if uploaded is not None:
        fail(409, f"job {job['id']} has uploaded its wheel already ({uploaded[0]})")


def _earlier_attempts_wheel(svc, job: dict, filename: str):  # type: ignore[no-untyped-def]
    with read_connection(svc.engine) as conn:
        for scope in (job["platform"], ALL_PLATFORMS):
            found = repository.find_file(conn, scope, filename)
            if (
                found is not None
                and found.origin == "build"
                and found.project == job["project"]
                and found.version == job["version"]
            ):
                return found
    return None


@bp.post("/jobs/<int:job_id>/finish")
@spec.operation(
    "finishJob",
    "worker protocol",
    "Report the job's outcome; transient failures are queued again with backoff",
    "build",
    {"200": spec.ok(spec.ref("Build"), "The job, as recorded")},
    errors=[404, 409],
    parameters=[spec.JOB_ID],
    body=spec.json_body(spec.ref("Finish")),
)
def finish(job_id: int) -> Response:
    _held(job_id)
    message = _message(protocol.FINISH)
    svc = services()
    try:
        job = jobs.finish(svc, job_id, message)
    except jobs.JobError as exc:
        _job_errors(exc)
    if job["state"] == "succeeded" and job["kind"] == resolutions.KIND:
        job = resolutions.closure_finished(svc, job)
    elif job["state"] == "succeeded":
        platform_lifecycle.note_image(svc, job["platform"], message.get("platform_image_id"))
    return jsonify(job)
