"""A platform's project page: local files merged with upstream pages, rendered and cached.

The cache key holds everything the page is made from — the project's serial and each
upstream page's content hash — so a page is rendered once per change, and a cached page
costs one indexed lookup (plus one for upstream state when the project is not private).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from index_server import repository
from index_server.db.engine import read_connection
from index_server.repository import ProjectState
from index_server.services import Services
from index_server.simple.cache import RenderedPage, make_page
from index_server.simple.merge import merge_files
from index_server.simple.model import ProjectPage
from index_server.simple.pages import local_simple_file, sorted_versions
from index_server.simple.render import render_project_page
from index_server.upstream import pages as upstream_pages
from index_server.upstream.fetch import project_url
from platforms import Platform


# Relative to /<platform>/simple/<project>/: /<platform>/files/<project>/<sha256>/<name>.
def files_base(project: str) -> str:
    return f"../../files/{project}/"


class ProjectNotFound(LookupError):
    pass


class UpstreamUnavailable(RuntimeError):
    pass


@dataclass
class ProjectPageResult:
    page: RenderedPage
    serial: int
    stale: list[str] = field(default_factory=list)


def is_private(services: Services, project: str, state: ProjectState | None) -> bool:
    """Hosted here (uploaded), or named private: never merged with an upstream."""
    if state is not None and state.hosted:
        return True
    return any(fnmatchcase(project, pattern) for pattern in services.settings.private_projects)


def project_page(
    services: Services, platform: Platform, project: str, content_type: str, force: bool = False
) -> ProjectPageResult:
    state = services.hot.project_state(project)
    view = upstream_pages.UpstreamView()
    if services.settings.upstream_urls and not is_private(services, project, state):
        states = services.hot.upstream_states(project)
        view = upstream_pages.upstream_view(services, project, states, force=force)
    if state is None and not view.found:
        if view.unavailable and not view.pages:
            raise UpstreamUnavailable(
                f"project {project!r} is not cached and the upstream is unavailable: "
                + "; ".join(view.unavailable)
            )
        raise ProjectNotFound(f"project {project!r} not found on {platform.name}")

    serial = state.serial if state else 0
    key = ("project", platform.name, project, content_type, serial, view.cache_key())

    def render() -> RenderedPage:
        with read_connection(services.engine) as conn:
            records = repository.files_for_platform(conn, state.id, platform.name) if state else []
            upstream_files = upstream_pages.load_files(conn, project, view.found)
        base = files_base(project)
        local = [local_simple_file(r, base) for r in records]
        files = merge_files(local, upstream_files, platform, base)
        from index_server.simple.merge import version_of

        page = ProjectPage(
            name=state.display_name if state else project,
            files=tuple(files),
            versions=sorted_versions(v for f in files if (v := version_of(f.filename))),
            tracks=tuple(project_url(p.upstream, project) for p in view.found),
        )
        return make_page(render_project_page(page, content_type), content_type, len(files))

    page = services.pages.get_or_render(key, render)
    if page.file_count == 0:
        # Known here, but nothing for this platform: as PyPI would say of an unknown name.
        raise ProjectNotFound(f"project {project!r} has no files for {platform.name}")
    return ProjectPageResult(page, serial, view.stale)
