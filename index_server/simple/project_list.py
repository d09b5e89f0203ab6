"""A platform's project list (the root page), rendered and cached by the index serial."""

from __future__ import annotations

from index_server import repository
from index_server.db.engine import read_connection
from index_server.services import Services
from index_server.simple.cache import RenderedPage, make_page
from index_server.simple.model import ProjectList
from index_server.simple.render import render_project_list
from platforms import Platform


def project_list_page(
    services: Services, platform: Platform, content_type: str
) -> tuple[RenderedPage, int]:
    """The page and the index serial it was made at."""
    serial = services.hot.index_serial()

    def render() -> RenderedPage:
        with read_connection(services.engine) as conn:
            names = tuple(repository.visible_projects(conn, platform.name))
        return make_page(render_project_list(ProjectList(names), content_type), content_type)

    page = services.pages.get_or_render(("root", platform.name, content_type, serial), render)
    return page, serial
