"""The first-party packages import one another one way only.

Reads every module's imports with ``ast`` (function-local and ``TYPE_CHECKING`` ones
included: a circle patched with a late import is still a circle) and fails on any import
circle among the modules of ``index_server/``, ``client/``, ``builder/``, ``platforms/``
and ``storage/``, and on ``client/``, ``builder/``, ``platforms/`` or ``storage/``
importing ``index_server``: the client (``pip install wheelfarm`` without the server's
dependencies), the farm's side and the shared parts never depend on the server.
"""

from __future__ import annotations

import ast
from pathlib import Path

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
