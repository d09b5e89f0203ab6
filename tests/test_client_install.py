"""``pip install wheelfarm`` is the client alone: a fresh venv, the project installed without
extras, offline from a folder of wheels that holds the server's dependencies too
(tests/image_wheels.py); none of them is installed, the client's commands run and a server
command says what to install."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import clean_client_env
from tests.image_wheels import image_wheels

REPO = Path(__file__).resolve().parent.parent
SOURCES = (
    "pyproject.toml",
    "README.md",
    "client",
    "index_server",
    "builder",
    "platforms",
    "storage",
)
SERVER_DISTRIBUTIONS = {"flask", "sqlalchemy", "alembic", "gunicorn", "boto3", "psycopg"}

pytestmark = pytest.mark.timeout(300)


def _run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd],
        env=clean_client_env(),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} exited with {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def test_pip_install_wheelfarm_is_the_client_alone(tmp_path: Path) -> None:
    wheels = image_wheels()
    available = {canonicalize_name(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
    assert available >= SERVER_DISTRIBUTIONS  # pip could install them, were they asked for
    # A copy of the sources, as the Dockerfile takes them (no build/ or egg-info left here).
    project = tmp_path / "wheelfarm"
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            project.mkdir(exist_ok=True)
            shutil.copy2(source, project / name)
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / "bin"
    _run(bin_dir / "pip", "install", "--quiet", "--no-index", "--find-links", wheels, project)

    listed = json.loads(_run(bin_dir / "pip", "list", "--format=json").stdout)
    installed = {canonicalize_name(d["name"]) for d in listed}
    assert "wheelfarm" in installed
    assert not installed & SERVER_DISTRIBUTIONS, sorted(installed)
    assert {"click", "packaging", "requests", "jsonschema"} <= installed

    for command in ("warm", "request", "worker", "track", "platform"):
        helped = _run(bin_dir / "wheelfarm", command, "--help")
        assert helped.stdout.startswith(f"Usage: wheelfarm {command} "), helped.stdout
    listed_platforms = _run(bin_dir / "wheelfarm", "platform", "list").stdout
    assert "debian-12-py3.11-x86_64" in listed_platforms
    # Every client-side module imports without the server's dependencies.
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for package in ("client", "builder", "platforms")
        for p in (REPO / package).rglob("*.py")
        if p.name != "inspect_in_container.py"  # runs in a build container, with its tools
    )
    imported = _run(
        bin_dir / "python",
        "-c",
        f"import importlib; [importlib.import_module(m) for m in {modules!r}]; print('ok')",
    )
    assert imported.stdout.strip() == "ok"

    for args in (("serve",), ("serve", "--port", "9"), ("db", "upgrade"), ("token", "--help")):
        refused = _run(bin_dir / "wheelfarm", *args, check=False)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert refused.stdout == ""
        assert refused.stderr == (
            f"wheelfarm {args[0]} needs the server: pip install 'wheelfarm[server]'\n"
        )
    overview = _run(bin_dir / "wheelfarm", "--help").stdout
    assert "serve" in overview and "needs the server" in overview
