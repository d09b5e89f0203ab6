"""Test distributions, made on the spot: wheels and sdists with real core metadata."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import textwrap
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.utils import canonicalize_name


def _escaped(name: str) -> str:
    return canonicalize_name(name).replace("-", "_")


def core_metadata(
    name: str,
    version: str,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    summary: str = "A test package",
) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {summary}",
    ]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {r}" for r in requires]
    return "\n".join(lines) + "\n\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    *,
    tag: str = "py3-none-any",
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    modules: Mapping[str, str] | None = None,
    metadata: str | None = None,
) -> Path:
    """A wheel that pip installs: a module, METADATA, WHEEL and RECORD."""
    escaped = _escaped(name)
    dist_info = f"{escaped}-{version}.dist-info"
    module = escaped.lower()
    modules = (
        modules
        if modules is not None
        else {f"{module}/__init__.py": f'__version__ = "{version}"\n'}
    )
    members: dict[str, bytes] = {path: text.encode() for path, text in modules.items()}
    members[f"{dist_info}/METADATA"] = (
        metadata or core_metadata(name, version, requires, requires_python)
    ).encode()
    members[f"{dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: wheelfarm-tests\nRoot-Is-Purelib: "
        f"{'true' if tag.endswith('any') else 'false'}\nTag: {tag}\n\n"
    ).encode()
    top = sorted(
        {p.split("/")[0] for p in modules if "/" in p}
        | {p.removesuffix(".py") for p in modules if "/" not in p}
    )
    members[f"{dist_info}/top_level.txt"] = ("\n".join(top) + "\n").encode()
    record = [_record_line(p, d) for p, d in members.items()] + [f"{dist_info}/RECORD,,"]
    members[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = Path(directory) / f"{escaped}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def make_sdist(
    directory: Path,
    name: str,
    version: str,
    *,
    requires: Iterable[str] = (),
    requires_python: str | None = None,
    files: Mapping[str, str] | None = None,
    pkg_info: str | None = None,
) -> Path:
    """A PEP 625 sdist with PKG-INFO and a setuptools pyproject.toml."""
    escaped = _escaped(name)
    module = escaped.lower()
    root = f"{escaped}-{version}"
    deps = ", ".join(f'"{r}"' for r in requires)
    rp = f'requires-python = "{requires_python}"\n' if requires_python else ""
    contents = {
        "PKG-INFO": pkg_info or core_metadata(name, version, requires, requires_python),
        "pyproject.toml": textwrap.dedent(
            f"""\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "{version}"
            dependencies = [{deps}]
            """
        )
        + rp,
        f"{module}/__init__.py": f'__version__ = "{version}"\n',
        **(files or {}),
    }
    path = Path(directory) / f"{escaped}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for member, text in contents.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{member}")
            info.size = len(data)
            info.mtime = 1704067200
            archive.addfile(info, io.BytesIO(data))
    return path
