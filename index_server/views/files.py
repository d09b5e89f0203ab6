"""Distribution files and their PEP 658 metadata: /files/<sha256>/<filename>[.metadata]."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, send_file

from index_server import repository
from index_server.db.engine import read_connection
from index_server.views.common import fail, require_read, services
from storage import blob_key

bp = Blueprint("files", __name__)

IMMUTABLE = "public, max-age=365000000, immutable"


@bp.get("/files/<sha256>/<filename>")
def download(sha256: str, filename: str) -> Response:
    require_read()
    svc = services()
    metadata = filename.endswith(".metadata")
    dist_name = filename.removesuffix(".metadata") if metadata else filename
    with read_connection(svc.engine) as conn:
        record = repository.find_file_by_digest(conn, sha256.lower(), dist_name)
    if record is None:
        fail(404, f"no file {dist_name!r} with sha256 {sha256}")
    if metadata:
        if not record.metadata_sha256:
            fail(404, f"no metadata file for {dist_name}")
        digest, mimetype, download_name = record.metadata_sha256, "text/plain", None
    else:
        digest, mimetype, download_name = record.sha256, _mimetype(dist_name), dist_name
    return _send_blob(digest, mimetype, download_name)


def _mimetype(filename: str) -> str:
    if filename.endswith(".whl") or filename.endswith(".zip"):
        return "application/zip"
    return "application/x-tar" if filename.endswith(".tar") else "application/gzip"


def _send_blob(digest: str, mimetype: str, download_name: str | None) -> Response:
    storage = services().storage
    key = blob_key(digest)
    location = storage.url(key, download_name or digest)
    if location:
        return redirect(location, code=302)
    path = storage.local_path(key)
    try:
        source = path if path is not None else storage.open(key)
        response = send_file(
            source,
            mimetype=mimetype,
            as_attachment=download_name is not None,
            download_name=download_name,
            etag=digest,
            conditional=True,
            max_age=None,
        )
    except FileNotFoundError:
        fail(404, "file bytes are missing from storage")
    if mimetype == "application/gzip":
        # A .tar.gz is served as is: never let a client transparently decompress it.
        response.headers.pop("Content-Encoding", None)
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers["Accept-Ranges"] = "bytes"
    return response
