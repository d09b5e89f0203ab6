"""The first-party packages import one another one way only.

Reads every module's imports with ``ast`` (function-local and ``TYPE_CHECKING`` ones
included: a circle patched with a late import is still a circle) and fails on any import
circle among the modules of ``index_server/``, ``client/``, ``builder/``, ``platforms/``
and ``storage/``, and on ``client/``, ``builder/``, ``platforms/`` or ``storage/``
importing ``index_server``: the client (``pip install wheelfarm`` without the server's
dependencies), the farm's side and the shared parts never depend on the server. And that
``client/``, ``builder/`` and ``platforms/`` import no third-party module but the base
dependencies' (pyproject.toml), none of the ``server`` extra's at import time.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("index_server", "client", "builder", "platforms", "storage")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The first-party modules ``name`` imports (a package's ``__init__`` for a name
    imported from it that is no module of its own)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            # The package itself only for a name defined in it, not for its submodules.
            targets = [t if t in known else base for t in submodules]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circles() -> None:
    graph = _graph()
    assert len(graph) > 50  # the walk found the packages
    circles = _circles(graph)
    described = [
        " <-> ".join(circle)
        + "\n    "
        + "\n    ".join(
            f"{source} imports {', '.join(sorted(graph[source] & set(circle)))}"
            for source in circle
        )
        for circle in circles
    ]
    assert not circles, "import circles:\n" + "\n".join(described)


def test_farm_and_shared_parts_never_import_the_server() -> None:
    offending = {
        name: sorted(t for t in targets if t.split(".")[0] == "index_server")
        for name, targets in _graph().items()
        if name.split(".")[0] != "index_server"
    }
    assert not {name: t for name, t in offending.items() if t}


def test_the_check_sees_a_function_local_circle(tmp_path: Path) -> None:
    # The check itself can fail: a two-module circle closed by a late import is found.
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _circles(graph) == [["a", "b"]]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from index_server import jobs\n")
    assert _imported("x.m", source, {"index_server", "index_server.jobs"}) == {"index_server.jobs"}


# Below the views: the domain (jobs, repository, upstream, ingest, ...), the services they
# share, and db/storage. None of them imports the views, the app or the metrics (the
# metrics observe the domain: see ``upstream.fetch.observe_fetches``).
LOWER = (
    "index_server.jobs",
    "index_server.repository",
    "index_server.upstream",
    "index_server.services",
    "index_server.db",
    "storage",
    "platforms",
)
UPPER = ("index_server.views", "index_server.app", "index_server.metrics")


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_domain_never_imports_views_or_metrics() -> None:
    upward = {
        name: sorted(t for t in targets if _within(t, UPPER))
        for name, targets in _graph().items()
        if _within(name, LOWER)
    }
    assert not {name: t for name, t in upward.items() if t}


# ---------------------------------------------------------------------------------------
# The client's side (client/, builder/ for the worker, platforms/) installs without the
# server: `pip install wheelfarm` brings the base dependencies only (pyproject.toml).

CLIENT_SIDE = ("client", "builder", "platforms")
# The modules each requirement of pyproject.toml provides (its import names).
IMPORT_NAMES = {
    "click": {"click"},
    "packaging": {"packaging"},
    "requests": {"requests", "urllib3"},
    "jsonschema": {"jsonschema"},
    "pip": {"pip"},
    "flask": {"flask", "werkzeug", "jinja2", "markupsafe", "itsdangerous"},
    "sqlalchemy": {"sqlalchemy"},
    "alembic": {"alembic"},
    "gunicorn": {"gunicorn"},
    "prometheus-client": {"prometheus_client"},
    "psycopg": {"psycopg", "psycopg_binary"},
    "boto3": {"boto3", "botocore", "s3transfer"},
}
# Imported only inside a build container, from the image's own build tools.
IN_CONTAINER = {"builder.inspect_in_container": {"auditwheel"}}


def _requirements(extra: str | None) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [canonicalize_name(Requirement(r).name) for r in listed]


def _third_party(path: Path, import_time_only: bool) -> set[str]:
    """The top-level names of the modules ``path`` imports that are neither first-party nor
    the standard library's; with ``import_time_only``, those outside function bodies."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if import_time_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found - set(PACKAGES) - set(sys.stdlib_module_names)


def _client_side() -> dict[str, Path]:
    return {name: path for name, path in _modules().items() if _within(name, CLIENT_SIDE)}


def test_every_dependency_has_its_import_names() -> None:
    # A new requirement must say which modules it provides, or the checks below miss it.
    assert set(_requirements(None)) | set(_requirements("server")) <= set(IMPORT_NAMES)


def test_the_client_side_imports_no_server_dependency_at_import_time() -> None:
    server = set().union(*(IMPORT_NAMES[r] for r in _requirements("server")))
    assert {"flask", "sqlalchemy", "alembic", "gunicorn", "boto3"} <= server
    modules = _client_side()
    assert {"client.cli", "builder.worker", "platforms"} <= set(modules)
    offending = {
        name: sorted(found)
        for name, path in modules.items()
        if (found := _third_party(path, import_time_only=True) & server)
    }
    assert not offending


def test_the_client_side_imports_only_base_dependencies() -> None:
    # Function-local imports too: `pip install wheelfarm` must run every client command.
    base = set().union(*(IMPORT_NAMES[r] for r in _requirements(None)))
    offending = {
        name: sorted(found)
        for name, path in _client_side().items()
        if (
            found := _third_party(path, import_time_only=False)
            - base
            - IN_CONTAINER.get(name, set())
        )
    }
    assert not offending


def test_the_dependency_check_sees_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import flask.json\nfrom sqlalchemy import Engine\nimport json\nfrom client import cli\n"
        "from . import sibling\n"
        "def f():\n    import boto3\n"
    )
    assert _third_party(source, import_time_only=True) == {"flask", "sqlalchemy"}
    assert _third_party(source, import_time_only=False) == {"flask", "sqlalchemy", "boto3"}
