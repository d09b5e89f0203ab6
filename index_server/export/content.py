"""What the export of a platform holds: the server's own pages, byte for byte, and files.

Pages come from the renderers the server answers with (``simple.project_page`` and
``simple.project_list``), so an exported page is the body the server would send for the
same Accept. Files are those the pages link to through our URLs: our own files, and
upstream files once pulled through (an upstream file not pulled yet stays a miss, which
nginx passes to the server, which pulls it).

An sdist whose download would queue a first-sight build (no wheel of that version on the
platform and no build job for it yet) is left out, so that download still reaches the
server and queues the build.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from index_server.db.engine import read_connection
from index_server.db.schema import ALL_PLATFORMS, build_jobs, files, projects, upstream_files
from index_server.services import Services
from index_server.simple.cache import RenderedPage
from index_server.simple.merge import version_of
from index_server.simple.negotiation import HTML, V1_JSON
from index_server.simple.project_list import project_list_page
from index_server.simple.project_page import (
    ProjectNotFound,
    UpstreamUnavailable,
    files_base,
    is_private,
    project_page,
)
from platforms import Platform
from storage import blob_key

# The file name of each format in a page's folder, and the content type it is served with.
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "index.json": V1_JSON}
_RENDER_TYPES = {"index.html": HTML, "index.json": V1_JSON}
METADATA_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Page:
    body: bytes
    gzipped: bytes
    content_type: str


@dataclass(frozen=True)
class File:
    key: str  # the blob's storage key
    content_type: str


@dataclass
class ProjectExport:
    """One project on one platform: no pages means the export must not have it."""

    pages: dict[str, Page] = field(default_factory=dict)
    files: dict[str, File] = field(default_factory=dict)
    upstream_expires: datetime | None = None  # when merged upstream pages go stale


def page_folder(platform: str, project: str | None = None) -> str:
    return f"{platform}/simple/{project}/" if project else f"{platform}/simple/"


def files_folder(platform: str, project: str) -> str:
    return f"{platform}/files/{project}/"


def _page(rendered: RenderedPage, content_type: str) -> Page:
    gzipped = rendered.gzipped or gzip.compress(rendered.body, compresslevel=6, mtime=0)
    return Page(rendered.body, gzipped, content_type)


def root_pages(services: Services, platform: Platform) -> dict[str, Page]:
    folder = page_folder(platform.name)
    return {
        folder + name: _page(project_list_page(services, platform, _RENDER_TYPES[name])[0], ct)
        for name, ct in PAGE_FILES.items()
    }


def project_export(services: Services, platform: Platform, project: str) -> ProjectExport:
    result = ProjectExport()
    try:
        rendered = {
            name: project_page(services, platform, project, _RENDER_TYPES[name]).page
            for name in PAGE_FILES
        }
    except (ProjectNotFound, UpstreamUnavailable):
        return result  # the server answers 404/502: let it
    folder = page_folder(platform.name, project)
    result.pages = {folder + n: _page(rendered[n], PAGE_FILES[n]) for n in PAGE_FILES}
    state = services.hot.project_state(project)
    if services.settings.upstream_urls and not is_private(services, project, state):
        states = services.hot.upstream_states(project).values()
        found = [s.expires_at for s in states if s.status == 200]
        result.upstream_expires = min(found) if found else None
    result.files = _linked_files(services, platform, project, rendered["index.json"].body)
    return result


def _linked_files(
    services: Services, platform: Platform, project: str, json_page: bytes
) -> dict[str, File]:
    with read_connection(services.engine) as conn:
        records = conn.execute(
            select(files.c.sha256, files.c.filename, files.c.packagetype, files.c.version)
            .join(projects, projects.c.id == files.c.project_id)
            .where(projects.c.name == project, files.c.platform.in_((ALL_PLATFORMS, platform.name)))
        ).all()
        pulled = {
            (r.sha256, r.filename)
            for r in conn.execute(
                select(upstream_files.c.sha256, upstream_files.c.filename).where(
                    upstream_files.c.project == project
                )
            )
        }
        jobs = {
            r.version
            for r in conn.execute(
                select(build_jobs.c.version).where(
                    build_jobs.c.project == project, build_jobs.c.platform == platform.name
                )
            )
        }
    ours = {(r.sha256, r.filename) for r in records}
    built = {r.version for r in records if r.packagetype == "bdist_wheel"} | jobs
    base = files_base(project)
    folder = files_folder(platform.name, project)
    linked: dict[str, File] = {}
    for entry in json.loads(json_page)["files"]:
        url, name = entry["url"], entry["filename"]
        sha256 = entry["hashes"].get("sha256")
        if not url.startswith(base) or not sha256:
            continue  # links the upstream itself
        is_sdist = not name.endswith(".whl")
        if is_sdist and platform.builds_on_first_sight and version_of(name) not in built:
            continue
        path = folder + url.removeprefix(base)
        if (sha256, name) in ours or (sha256, name) in pulled:
            linked[path] = File(blob_key(sha256), file_content_type(name))
        metadata = entry.get("core-metadata")
        digest = metadata.get("sha256") if isinstance(metadata, dict) else None
        if digest and ((sha256, name) in ours or (digest, name + ".metadata") in pulled):
            linked[path + ".metadata"] = File(blob_key(digest), METADATA_TYPE)
    return linked


def file_content_type(filename: str) -> str:
    """As the server sends it (``views.files``), and as the shipped nginx config maps it."""
    if filename.endswith((".whl", ".zip")):
        return "application/zip"
    return "application/x-tar" if filename.endswith(".tar") else "application/gzip"
