"""The legacy upload API that twine speaks: POST /<platform>/legacy/."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.datastructures import FileStorage

from index_server import owners
from index_server.auth import Identity
from index_server.distributions import InvalidDistribution, parse_filename
from index_server.ingest import FileConflict, ingest_file
from index_server.leftovers import UPLOAD_SCRATCH_PREFIX
from index_server.views.common import fail, get_platform, require, services
from platforms import Platform

bp = Blueprint("upload", __name__)


@bp.post("/<platform>/legacy/")
@bp.post("/<platform>/legacy")
def upload(platform: str) -> Response:
    plat = get_platform(platform)
    who = require("upload")
    form = request.form
    action = form.get(":action", "file_upload")
    if action != "file_upload":
        fail(400, f"unsupported :action {action!r}; only file_upload is supported")
    content = request.files.get("content")
    if content is None or not content.filename:
        fail(400, "missing 'content' file field")
    filename = Path(content.filename).name
    if filename != content.filename:
        fail(400, f"invalid filename {content.filename!r}")
    digests = {
        "sha256": form.get("sha256_digest", ""),
        "blake2_256": form.get("blake2_256_digest", ""),
        "md5": form.get("md5_digest", ""),
    }
    if not any(digests.values()):
        fail(400, "missing digest: send sha256_digest (twine does)")
    try:
        project = parse_filename(filename).project
    except InvalidDistribution as exc:
        fail(400, str(exc))
    _check_owner(who, project)
    return store_upload(
        plat,
        content,
        filename,
        actor=who.name,
        claimed_digests=digests,
        claimed_name=form.get("name"),
        claimed_version=form.get("version"),
        uploader=who,
    )


def _check_owner(who: Identity, project: str) -> None:
    try:
        owners.check_upload(services(), who, project)
    except owners.NotAllowed as exc:
        fail(403, str(exc))
    except owners.UpstreamUnknown as exc:
        fail(503, str(exc))


def store_upload(
    platform: Platform, content: FileStorage, filename: str, **ingest_options: Any
) -> Response:
    """Ingest an uploaded file (twine's, or a worker's wheel): 201 new, 200 already there."""
    svc = services()
    with tempfile.TemporaryDirectory(
        prefix=UPLOAD_SCRATCH_PREFIX, dir=svc.settings.data_dir
    ) as tmp:
        path = Path(tmp) / "upload"
        content.save(path)
        try:
            result = ingest_file(svc, platform, path, filename, **ingest_options)
        except InvalidDistribution as exc:
            fail(400, str(exc))
        except FileConflict as exc:
            fail(409, str(exc))
        except owners.NotAllowed as exc:
            fail(403, str(exc))
    body = {
        "filename": result.file.filename,
        "sha256": result.file.sha256,
        "created": result.created,
        "platform": result.file.platform or None,
    }
    return jsonify(body), 201 if result.created else 200  # type: ignore[return-value]
