"""Rendering pages as PEP 503 HTML or PEP 691 JSON, from the same page model."""

from __future__ import annotations

import json
from html import escape

from packaging.utils import canonicalize_name

from index_server.simple.model import ProjectList, ProjectPage, SimpleFile
from index_server.simple.negotiation import is_json

API_VERSION = "1.1"


def render_project_page(page: ProjectPage, content_type: str) -> bytes:
    if is_json(content_type):
        return _dumps(
            {
                "meta": {"api-version": API_VERSION, **_tracks_meta(page)},
                "name": canonicalize_name(page.name),
                "files": [_file_json(f) for f in page.files],
                "versions": list(page.versions),
            }
        )
    title = escape(page.name)
    head = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">',
        *(f'    <meta name="pypi:tracks" content="{escape(url)}">' for url in page.tracks),
        f"    <title>Links for {title}</title>",
        "  </head>",
        "  <body>",
        f"    <h1>Links for {title}</h1>",
    ]
    links = [f"    {_file_anchor(f)}<br>" for f in page.files]
    return "\n".join([*head, *links, "  </body>", "</html>", ""]).encode()


def render_project_list(listing: ProjectList, content_type: str) -> bytes:
    if is_json(content_type):
        return _dumps(
            {
                "meta": {"api-version": API_VERSION},
                "projects": [{"name": name} for name in listing.names],
            }
        )
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "  <head>",
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">',
        "    <title>Simple index</title>",
        "  </head>",
        "  <body>",
        *(
            f'    <a href="{escape(canonicalize_name(name))}/">{escape(name)}</a><br>'
            for name in listing.names
        ),
        "  </body>",
        "</html>",
        "",
    ]
    return "\n".join(lines).encode()


def _tracks_meta(page: ProjectPage) -> dict[str, object]:
    return {"tracks": list(page.tracks)} if page.tracks else {}


def _file_json(f: SimpleFile) -> dict[str, object]:
    data: dict[str, object] = {"filename": f.filename, "url": f.url, "hashes": dict(f.hashes)}
    if f.requires_python is not None:
        data["requires-python"] = f.requires_python
    metadata = dict(f.core_metadata) if isinstance(f.core_metadata, dict) else f.core_metadata
    data["core-metadata"] = metadata
    data["dist-info-metadata"] = metadata
    data["yanked"] = f.yanked if f.yanked != "" else True
    if f.size is not None:
        data["size"] = f.size
    if f.upload_time is not None:
        data["upload-time"] = f.upload_time
    return data


def _file_anchor(f: SimpleFile) -> str:
    href = f.url
    if "sha256" in f.hashes:
        href += f"#sha256={f.hashes['sha256']}"
    attrs = [f'href="{escape(href)}"']
    if f.requires_python:
        attrs.append(f'data-requires-python="{escape(f.requires_python)}"')
    if f.core_metadata:
        value = _metadata_attr(f.core_metadata)
        attrs.append(f'data-dist-info-metadata="{value}"')
        attrs.append(f'data-core-metadata="{value}"')
    if f.yanked is not False:
        reason = f.yanked if isinstance(f.yanked, str) else ""
        attrs.append(f'data-yanked="{escape(reason)}"')
    return f"<a {' '.join(attrs)}>{escape(f.filename)}</a>"


def _metadata_attr(core_metadata: object) -> str:
    if isinstance(core_metadata, dict) and core_metadata:
        algo = "sha256" if "sha256" in core_metadata else next(iter(core_metadata))
        return escape(f"{algo}={core_metadata[algo]}")
    return "true"


def _dumps(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
