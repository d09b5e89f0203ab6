"""The worker protocol: every message between the server and a build worker, with its schema.

Workers talk to the server only over HTTP, with a ``build``-scoped token (Bearer):

==========================================  =================  ===========================
request                                     body schema        answer
==========================================  =================  ===========================
POST /api/worker/claim                      CLAIM              200 JOB, or 204: no work
POST /api/worker/jobs/<id>/heartbeat        HEARTBEAT          200 HEARTBEAT_REPLY; 409 lost
POST /api/worker/jobs/<id>/log              LOG                204; 409 lease lost
POST /api/worker/jobs/<id>/wheels           multipart: lease,  201/200 as uploads; 409 lost
                                            sha256_digest,
                                            content (wheel)
POST /api/worker/jobs/<id>/finish           FINISH             200 the job; 409 lease lost
==========================================  =================  ===========================

A claim is atomic (one job, one worker) and comes with a lease: a secret the worker sends
with every later message, valid for ``lease_seconds`` and renewed by heartbeats. A worker
that stops heartbeating loses the lease; the job goes back to the queue, and any message
with the old lease is refused with 409. Wheels go through the same ingest as uploads.
"""

from __future__ import annotations

from typing import Any

import jsonschema

ERROR_CATEGORIES = (
    "missing_system_library",
    "compiler_error",
    "build_timeout",
    "resource_limit",
    "import_failed",
    "network",
    "lost_worker",
    # resolution jobs (kind "resolve"): pip finds no set of versions; preparing an sdist's
    # metadata failed (the summary names the project); the resolution ran out of time.
    "does_not_resolve",
    "metadata_build_failed",
    "resolution_timeout",
    "other",
)
JOB_KINDS = ("build", "resolve")
# Failures worth another attempt, with backoff.
TRANSIENT_CATEGORIES = ("network", "lost_worker")

_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_LEASE = {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"}

BUILD_SETTINGS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "constraints": {"type": "string", "maxLength": 100_000},  # PIP_BUILD_CONSTRAINT file
        "env": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 10_000},
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        },
        "os_packages": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9+.-]*$"},
        },
        "build_command": {"type": ["string", "null"], "maxLength": 10_000},
    },
}

CLAIM: dict[str, Any] = {
    "type": "object",
    "required": ["worker", "platforms"],
    "additionalProperties": False,
    "properties": {
        "worker": _NAME,
        "platforms": {"type": "array", "items": _NAME, "minItems": 1},
        "runner": {"type": "string", "enum": ["podman", "docker", "host"]},
        # The kinds of job this worker takes (default: every kind).
        "kinds": {"type": "array", "items": {"enum": list(JOB_KINDS)}, "minItems": 1},
    },
}

# A resolution's answer: the pinned closure, as pip's report says it (one item per
# distribution to install; ``sdist``: pip chose an sdist, so the platform has no wheel).
CLOSURE_ITEM: dict[str, Any] = {
    "type": "object",
    "required": ["name", "version"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "version": {"type": "string", "minLength": 1, "maxLength": 100},
        "filename": {"type": ["string", "null"], "maxLength": 300},
        "sdist": {"type": "boolean"},
        "direct": {"type": ["string", "null"], "maxLength": 2000},
    },
}

JOB: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "project",
        "version",
        "platform",
        "lease",
        "lease_seconds",
        "index_path",
        "attempt",
        "settings",
    ],
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string", "enum": list(JOB_KINDS)},  # absent: build
        "project": {"type": "string", "maxLength": 200},  # "" for a resolution
        "version": _NAME,
        "platform": _NAME,
        "lease": _LEASE,
        "lease_seconds": {"type": "integer", "minimum": 1},
        "index_path": {"type": "string"},  # /<platform>/simple/, on the server
        "attempt": {"type": "integer", "minimum": 1},
        "settings": BUILD_SETTINGS,
        # A resolution job: the requirements and constraints files' text, and its time limit
        # (seconds). Its ``settings`` are every project's build settings merged (constraints
        # and OS packages; not env, which belongs to one project's build).
        "requirements": {"type": "string"},
        "constraints": {"type": "string"},
        "timeout": {"type": "number", "minimum": 1},
    },
}

HEARTBEAT: dict[str, Any] = {
    "type": "object",
    "required": ["lease"],
    "additionalProperties": False,
    "properties": {"lease": _LEASE},
}

HEARTBEAT_REPLY: dict[str, Any] = {
    "type": "object",
    "required": ["lease_seconds", "cancel"],
    "properties": {"lease_seconds": {"type": "integer"}, "cancel": {"type": "boolean"}},
}

LOG: dict[str, Any] = {
    "type": "object",
    "required": ["lease", "text"],
    "additionalProperties": False,
    "properties": {"lease": _LEASE, "text": {"type": "string", "maxLength": 1_000_000}},
}

FINISH: dict[str, Any] = {
    "type": "object",
    "required": ["lease", "outcome"],
    "additionalProperties": False,
    "properties": {
        "lease": _LEASE,
        "outcome": {"type": "string", "enum": ["succeeded", "failed"]},
        "error_category": {"type": ["string", "null"], "enum": [*ERROR_CATEGORIES, None]},
        "error_summary": {"type": ["string", "null"], "maxLength": 10_000},
        "image_id": {"type": ["string", "null"], "maxLength": 200},
        # The platform's build image (wheelfarm-build/<platform>): a new one makes the
        # platform's wheels built on older images stale (index_server/platform_lifecycle.py).
        "platform_image_id": {"type": ["string", "null"], "maxLength": 200},
        "build_seconds": {"type": ["number", "null"], "minimum": 0},
        "wheels": {"type": "array", "items": {"type": "string"}},
        "shared_libraries": {"type": "array", "items": {"type": "string"}},
        # The packages of the libraries the wheel links directly (a runtime image needs
        # these), and of everything it loads (the closure, for the build's detail).
        "os_packages": {"type": "array", "items": {"type": "string"}},
        "os_packages_closure": {"type": "array", "items": {"type": "string"}},
        # False: a wheel with a platform tag and no compiled code (the C extension fell
        # back to pure Python); null: a pure wheel, or nothing was inspected.
        "compiled": {"type": ["boolean", "null"]},
        # A resolution job's answer (kind "resolve").
        "closure": {"type": "array", "items": CLOSURE_ITEM, "maxItems": 10_000},
    },
}


class ProtocolError(ValueError):
    """A message does not match its schema; the text says where, in one line."""


def validate(message: object, schema: dict[str, Any]) -> dict[str, Any]:
    try:
        jsonschema.validate(message, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "message"
        raise ProtocolError(f"{where}: {exc.message}"[:300]) from None
    assert isinstance(message, dict)
    return message
