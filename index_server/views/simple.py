"""The Simple Repository API of each platform: /<platform>/simple/."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, redirect, request

from index_server.simple.http import page_response
from index_server.simple.negotiation import choose_content_type
from index_server.simple.project_list import project_list_page
from index_server.simple.project_page import ProjectNotFound, UpstreamUnavailable
from index_server.simple.project_page import project_page as build_project_page
from index_server.views.common import fail, get_platform, project_name, require_read, services

bp = Blueprint("simple", __name__)


def _content_type() -> str:
    # Most requests have no query string: skip parsing one.
    fmt = request.args.get("format") if request.environ.get("QUERY_STRING") else None
    chosen = choose_content_type(request.headers.get("Accept"), fmt)
    if chosen is None:
        fail(
            406,
            "none of the accepted types is offered: use application/vnd.pypi.simple.v1+json, "
            "application/vnd.pypi.simple.v1+html or text/html",
        )
    return chosen


def _redirect(location: str) -> Response:
    location = quote(location, safe="/")  # a name may hold any character, even a newline
    if request.query_string:
        location += "?" + request.query_string.decode("latin-1")
    return redirect(location, code=301)


@bp.get("/<platform>/simple")
def root_without_slash(platform: str) -> Response:
    require_read()
    get_platform(platform)
    return _redirect(f"/{platform}/simple/")


@bp.get("/<platform>/simple/")
def project_list(platform: str) -> Response:
    plat = get_platform(platform)
    require_read()
    content_type = _content_type()
    svc = services()
    page, serial = project_list_page(svc, plat, content_type)
    response = page_response(request, page, svc.settings.page_max_age)
    response.headers["X-PyPI-Last-Serial"] = str(serial)
    return response


@bp.get("/<platform>/simple/<project>")
def project_without_slash(platform: str, project: str) -> Response:
    require_read()
    get_platform(platform)
    return _redirect(f"/{platform}/simple/{project_name(project)}/")


@bp.get("/<platform>/simple/<project>/")
def project_page(platform: str, project: str) -> Response:
    plat = get_platform(platform)
    canonical = project_name(project)  # before any lookup or upstream request
    if canonical != project:
        return _redirect(f"/{platform}/simple/{canonical}/")
    require_read()
    content_type = _content_type()
    svc = services()
    try:
        result = build_project_page(svc, plat, canonical, content_type)
    except ProjectNotFound as exc:
        fail(404, str(exc))
    except UpstreamUnavailable as exc:
        fail(502, str(exc))
    response = page_response(request, result.page, svc.settings.page_max_age)
    response.headers["X-PyPI-Last-Serial"] = str(result.serial)
    if result.stale:
        # The upstream failed: this page is the last good copy. RFC 7234's stale warning.
        response.headers["Warning"] = '110 wheelfarm "Response is Stale"'
        response.headers["X-Wheelfarm-Upstream-Stale"] = "; ".join(result.stale)[:1000]
        response.headers["Cache-Control"] = "no-cache"
    return response
