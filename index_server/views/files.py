"""Distribution files and their PEP 658 metadata.

``/<platform>/files/<project>/<sha256>/<filename>[.metadata]`` is what project pages link
to: our files, or upstream files pulled through on first request. ``/files/<sha256>/<name>``
serves our own files without a platform (used by the admin API).
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from flask import Blueprint, Response, redirect, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import dump_options_header
from werkzeug.wsgi import FileWrapper, wrap_file

from index_server.build_requests import note_sdist_served
from index_server.locks import LockTimeout
from index_server.repository import ServedFile
from index_server.simple.merge import version_of
from index_server.upstream.fetch import DigestMismatch, UpstreamError
from index_server.upstream.files import find_announced, is_pulled, pull_through
from index_server.views.common import fail, get_platform, project_name, require_read, services
from storage import blob_key

bp = Blueprint("files", __name__)

IMMUTABLE = "public, max-age=365000000, immutable"
STREAM_CHUNK = 64 * 1024
METADATA_TYPE = "text/plain"
CONDITIONAL_HEADERS = (
    "Range",
    "If-None-Match",
    "If-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
)


def _split(filename: str) -> tuple[str, bool]:
    if filename.endswith(".metadata"):
        return filename.removesuffix(".metadata"), True
    return filename, False


def _local(sha256: str, dist_name: str) -> ServedFile | None:
    return services().hot.served_file(sha256.lower(), dist_name)


def _send_local(record: ServedFile, metadata: bool) -> Response:
    if metadata:
        if not record.metadata_sha256:
            fail(404, f"no metadata file for {record.filename}")
        return _send_metadata(record.metadata_sha256)
    svc = services()
    svc.downloads.note(svc, record.project)
    return _send_blob(record.sha256, _mimetype(record.filename), record.filename)


@bp.get("/files/<sha256>/<filename>")
def download(sha256: str, filename: str) -> Response:
    require_read()
    dist_name, metadata = _split(filename)
    record = _local(sha256, dist_name)
    if record is None:
        fail(404, f"no file {dist_name!r} with sha256 {sha256}")
    return _send_local(record, metadata)


@bp.get("/<platform>/files/<project>/<sha256>/<filename>")
def platform_download(platform: str, project: str, sha256: str, filename: str) -> Response:
    plat = get_platform(platform)
    require_read()
    svc = services()
    dist_name, metadata = _split(filename)
    record = _local(sha256, dist_name)
    if record is not None:
        if record.packagetype == "sdist" and not metadata:
            note_sdist_served(svc, plat, record.project, record.version)
        return _send_local(record, metadata)

    project = project_name(project)
    entry = find_announced(svc, project, sha256.lower(), dist_name)
    if entry is None:
        fail(404, f"no file {dist_name!r} with sha256 {sha256} for {project!r}")
    if metadata:
        digest = (
            entry.core_metadata.get("sha256") if isinstance(entry.core_metadata, dict) else None
        )
        if not digest:
            fail(404, f"the upstream announces no verifiable metadata for {dist_name}")
        name, url = filename, entry.url + ".metadata"
    else:
        digest, name, url = sha256.lower(), dist_name, entry.url
    if not is_pulled(svc, digest, name) or not svc.storage.exists(blob_key(digest)):
        try:
            pull_through(svc, project, name, url, digest)
        except DigestMismatch as exc:
            fail(502, f"refused upstream file: {exc}")  # names no digest (see DigestMismatch)
        except UpstreamError as exc:
            fail(502, f"upstream fetch failed: {exc}")
        except LockTimeout:
            fail(503, f"{name} is being fetched by another request; retry shortly")
    if metadata:
        return _send_metadata(digest)
    svc.downloads.note(svc, project)
    version = version_of(dist_name)
    if not dist_name.endswith(".whl") and version:
        note_sdist_served(svc, plat, project, version)
    return _send_blob(digest, _mimetype(dist_name), dist_name)


def _mimetype(filename: str) -> str:
    if filename.endswith((".whl", ".zip")):
        return "application/zip"
    return "application/x-tar" if filename.endswith(".tar") else "application/gzip"


def _send_metadata(digest: str) -> Response:
    """A PEP 658 metadata file, from this process's memory once read (unless the storage
    redirects downloads elsewhere)."""
    svc = services()
    data = svc.small_blobs.get(digest)
    if data is None:
        key = blob_key(digest)
        location = svc.storage.url(key, digest)  # presigned once, not again in _send_blob
        if location:
            return redirect(location, code=302)
        try:
            with svc.storage.open(key) as stream:
                data = stream.read(svc.small_blobs.max_blob + 1)
        except FileNotFoundError:
            fail(404, "file bytes are missing from storage")
        if len(data) > svc.small_blobs.max_blob:
            return _send_blob(digest, METADATA_TYPE, None)
        svc.small_blobs.add(digest, data)
    response = _immutable(Response(data, mimetype=METADATA_TYPE), digest)
    if _is_conditional():
        response.make_conditional(request, accept_ranges=True, complete_length=len(data))
    return response


def _send_blob(digest: str, mimetype: str, download_name: str | None) -> Response:
    storage = services().storage
    key = blob_key(digest)
    location = storage.url(key, download_name or digest)
    if location:
        return redirect(location, code=302)
    try:
        stream = storage.open(key)
    except FileNotFoundError:
        fail(404, "file bytes are missing from storage")
    return _stream_response(stream, digest, mimetype, download_name)


def _stream_response(
    stream: BinaryIO, digest: str, mimetype: str, download_name: str | None
) -> Response:
    """The blob, sent with sendfile when it is a file and no Range is asked for.

    Built by hand rather than by ``send_file``: its mimetype guess, stat and Last-Modified
    date cost a fifth of a download's CPU, and the digest is a stronger validator than a
    date. Conditional and Range requests go through werkzeug's ``make_conditional``.
    """
    size = _size(stream)
    if "Range" in request.headers or size is None:
        # werkzeug's wrapper seeks to a range's start; the server's (sendfile) cannot.
        body: object = FileWrapper(stream, STREAM_CHUNK)
    else:
        body = wrap_file(request.environ, stream, STREAM_CHUNK)
    response = _immutable(Response(body, mimetype=mimetype, direct_passthrough=True), digest)
    if size is not None:
        response.content_length = size
    if download_name:
        response.headers["Content-Disposition"] = dump_options_header(
            "attachment", {"filename": download_name}
        )
    # Never a Content-Encoding: a .tar.gz is served as is, not transparently decompressed.
    if _is_conditional():
        try:
            response.make_conditional(request, accept_ranges=True, complete_length=size)
        except RequestedRangeNotSatisfiable:
            stream.close()
            raise
    return response


def _is_conditional() -> bool:
    """Whether the request has a Range or a validator: only then is werkzeug's (costly)
    ``make_conditional`` needed."""
    return any(header in request.headers for header in CONDITIONAL_HEADERS)


def _immutable(response: Response, digest: str) -> Response:
    """The headers of every blob: its digest as ETag, cacheable for good, ranges accepted."""
    response.set_etag(digest)
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers["Accept-Ranges"] = "bytes"
    return response


def _size(stream: BinaryIO) -> int | None:
    """The stream's length: from the file system, or by seeking; None if neither can tell."""
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        pass
    if stream.seekable():
        size = stream.seek(0, io.SEEK_END)
        stream.seek(0)
        return size
    return None
