"""The container image and the Compose file.

* The top-level Dockerfile, built for real with Podman, offline: the base image made by
  .ci/setup.d/25-platform-images.sh, dependencies from a folder of wheels (tests/image_wheels.py)
  mounted into the build, no network. The server runs from it on a published port: the
  image's health check passes (and fails with no server), it runs as a non-root user, a
  wheel uploaded with twine installs with pip into a fresh venv, and the Docker CLI the
  worker's ``--runner docker`` drives is on PATH. Everything made is removed afterwards.
  The CLI comes from ``DOCKER_CLI_IMAGE``, here a stand-in made on the spot (no registry).
* docker-compose.yml, checked statically: services, healthchecks, environment variables
  the code reads, URLs that parse, and command lines that wheelfarm's own CLI accepts.

The image is built in the first (SQLite) pass only: it uses no test database.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from sqlalchemy.engine import make_url

from client.cli import main as wheelfarm_cli
from client.logging_setup import logging_config
from index_server import config
from index_server.config import Settings
from platforms import load_platforms
from storage import open_storage
from storage.s3 import S3Storage
from tests.builder_helpers import BASE_IMAGE, REPO, require_podman
from tests.client_helpers import pip, run, twine_upload
from tests.conftest import ADMIN_TOKEN, TEST_POSTGRES_URL, free_port
from tests.factory import make_wheel
from tests.image_wheels import image_wheels

PLATFORM = "debian-12-py3.11-x86_64"
COMPOSE_FILE = REPO / "docker-compose.yml"
DATA_DIR = "/var/lib/wheelfarm"
first_pass_only = pytest.mark.skipif(
    bool(TEST_POSTGRES_URL),
    reason="the image is built in the first (SQLite) pass only: it uses no test database",
)


def podman(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited with {result.returncode}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


@dataclass
class Image:
    name: str
    build_seconds: float


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    require_podman()
    wheels = image_wheels()
    tag = uuid.uuid4().hex[:12]
    # The Docker CLI stage's source: a stand-in with the files the Dockerfile copies.
    cli_context = tmp_path_factory.mktemp("docker-cli")
    for name in ("docker", "docker-buildx"):
        stub = cli_context / name
        stub.write_text(f'#!/bin/sh\necho "{name} stand-in: $*"\n')
        stub.chmod(0o755)
    (cli_context / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY docker /usr/local/bin/docker\n"
        "COPY docker-buildx /usr/local/libexec/docker/cli-plugins/docker-buildx\n"
    )
    cli_image = f"localhost/wheelfarm-test-docker-cli:{tag}"
    name = f"localhost/wheelfarm-test-image:{tag}"
    try:
        podman("build", "--quiet", "--layers=false", "--tag", cli_image, str(cli_context))
        started = time.monotonic()
        podman(
            "build",
            "--format=docker",  # keeps HEALTHCHECK (the OCI format has none)
            "--layers=false",  # no intermediate images left behind
            "--network=none",  # offline: everything comes from the wheels folder
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "--build-arg",
            f"DOCKER_CLI_IMAGE={cli_image}",
            "--volume",
            f"{wheels}:/wheels:ro",
            "--build-arg",
            "PIP_FIND_LINKS=/wheels",
            "--build-arg",
            "PIP_NO_INDEX=1",
            "--file",
            str(REPO / "Dockerfile"),
            "--tag",
            name,
            str(REPO),
        )
        yield Image(name, time.monotonic() - started)
    finally:
        podman("rmi", "--force", name, cli_image, check=False)


@dataclass
class Container:
    name: str
    url: str

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *args, check=check)

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr


def start_container(image: str, *args: str, port: int | None = None) -> str:
    name = f"wheelfarm-test-{uuid.uuid4().hex[:12]}"
    publish = ["--publish", f"127.0.0.1:{port}:8080"] if port else []
    podman(
        "run",
        "--detach",
        "--name",
        name,
        *publish,
        "--env",
        f"WHEELFARM_ADMIN_TOKEN={ADMIN_TOKEN}",
        "--env",
        "WHEELFARM_UPSTREAM_URL=none",  # no network in tests
        image,
        *args,
    )
    return name


def remove_container(name: str) -> None:
    podman("rm", "--force", "--volumes", "--time", "0", name, check=False)


@pytest.fixture(scope="module")
def server(image: Image) -> Iterator[Container]:
    """The image's default command: ``wheelfarm serve`` on port 8080, published on loopback."""
    port = free_port()
    name = start_container(image.name, port=port)
    container = Container(name, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(container.url + "/health", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no server:\n{container.logs()}") from None
                time.sleep(0.2)
        yield container
    finally:
        remove_container(name)


@first_pass_only
def test_the_image_runs_the_server_as_a_non_root_user(image: Image, server: Container) -> None:
    uid = server.exec("id", "-u").stdout.strip()
    assert uid.isdigit() and uid != "0"
    # The process serving (gunicorn's master, PID 1) and the data folder are that user's.
    assert server.exec("stat", "-c", "%u", "/proc/1").stdout.strip() == uid
    assert server.exec("stat", "-c", "%u", DATA_DIR).stdout.strip() == uid
    assert "wheelfarm.sqlite3" in server.exec("ls", DATA_DIR).stdout
    assert image.build_seconds < 300


@first_pass_only
def test_the_health_check_passes_and_fails_without_a_server(
    image: Image, server: Container
) -> None:
    check = podman("healthcheck", "run", server.name, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    status = podman("inspect", "--format", "{{.State.Health.Status}}", server.name)
    assert status.stdout.strip() == "healthy"
    # The same check in a container of the image that serves nothing.
    idle = start_container(image.name, "sleep", "60")
    try:
        check = podman("healthcheck", "run", idle, check=False)
        assert check.returncode != 0, check.stdout + check.stderr
    finally:
        remove_container(idle)


@first_pass_only
def test_a_twine_upload_installs_with_pip_from_the_container(
    server: Container, tmp_path: Path
) -> None:
    # A token made with the CLI inside the container, as an operator would.
    token = server.exec("wheelfarm", "token", "create", "--scope", "upload").stdout.strip()
    wheel = make_wheel(
        tmp_path, "boxed-pkg", "1.2", modules={"boxed_pkg.py": "WHERE = 'in a container'\n"}
    )
    twine_upload(server.url, PLATFORM, token, [wheel])
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    pip(
        "install",
        "--index-url",
        f"{server.url}/{PLATFORM}/simple/",
        "boxed-pkg==1.2",
        python=python,
    )
    imported = run([python, "-c", "import boxed_pkg; print(boxed_pkg.WHERE)"])
    assert imported.stdout.strip() == "in a container"


@first_pass_only
def test_the_image_has_the_docker_cli_for_workers(image: Image) -> None:
    found = podman("run", "--rm", image.name, "sh", "-c", "command -v docker && docker version")
    assert found.stdout.splitlines() == ["/usr/local/bin/docker", "docker stand-in: version"]
    helped = podman("run", "--rm", image.name, "wheelfarm", "worker", "--help")
    assert "--runner [podman|docker|host]" in helped.stdout


# ---------------------------------------------------------------------------------------
# docker-compose.yml, statically

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: $$, ${NAME}, ${NAME:-default}, ${NAME:?error}."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if env.get(name):
            return env[name]
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op in (":-", "-") else ""

    return _VARIABLE.sub(one, value)


def _interpolated(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, env) for key, value in node.items()}
    return node


DOTENV = {
    "WHEELFARM_ADMIN_TOKEN": "wf_compose-admin-token-0123456789",
    "POSTGRES_PASSWORD": "pg-secret",
    "S3_ACCESS_KEY": "s3-access",
    "S3_SECRET_KEY": "s3-secret-key",
    "WHEELFARM_WORKER_TOKEN": "wf_compose-worker-token-0123456789",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolated(yaml.safe_load(COMPOSE_FILE.read_text()), DOTENV)  # type: ignore[no-any-return]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _known_variables() -> set[str]:
    """Every WHEELFARM_* name the code reads (a name nothing reads is a typo)."""
    names: set[str] = set()
    for package in ("index_server", "client", "builder", "storage", "platforms"):
        for path in (REPO / package).rglob("*.py"):
            names.update(re.findall(r"WHEELFARM_[A-Z0-9_]+", path.read_text()))
    names.update(f"WHEELFARM_{key.upper()}" for key in config._NUMBERS)
    return names


def accepts(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse ``wheelfarm SUBCOMMAND ...`` with wheelfarm's click CLI, as the container would
    get it (environment included): a bad option or value, or a missing required one, fails."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with wheelfarm_cli.make_context("wheelfarm", argv[1:2]) as root:
        # The root command loads the server's commands by name (client/cli.py).
        assert argv[0] == "wheelfarm" and argv[1] in wheelfarm_cli.list_commands(root), argv
        command = wheelfarm_cli.get_command(root, argv[1])
        assert command is not None
        command.make_context(argv[1], argv[2:], parent=root).close()


def test_compose_requires_the_secrets_from_the_environment() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for key in ("WHEELFARM_ADMIN_TOKEN", "POSTGRES_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
        with pytest.raises(KeyError, match=key):
            _interpolated(raw, {k: v for k, v in DOTENV.items() if k != key})
    # No secret is written into the file itself.
    text = COMPOSE_FILE.read_text()
    assert not any(value in text for value in DOTENV.values())


def test_compose_services_volumes_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"server", "worker", "postgres", "s3", "s3-bucket"} <= set(services)
    for name in ("server", "worker", "postgres", "s3"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, (name, test)
    # Server and worker are the image built from the top-level Dockerfile.
    for name in ("server", "worker"):
        assert services[name]["build"]["context"] == "."
        assert services[name]["image"] == services["server"]["image"]
    server_health = services["server"]["healthcheck"]["test"]
    assert "http://127.0.0.1:8080/health" in server_health[-1]
    assert services["server"]["ports"] == ["8080:8080"]
    # Start order: the database and the bucket before the server, the server before workers.
    assert services["server"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "s3-bucket": {"condition": "service_completed_successfully"},
    }
    assert services["worker"]["depends_on"] == {"server": {"condition": "service_healthy"}}
    # Named volumes are declared; data lives in them.
    declared = set(compose["volumes"])
    mounts = {
        name: [v.split(":") for v in service.get("volumes", [])]
        for name, service in services.items()
    }
    assert ["wheelfarm-data", DATA_DIR] in mounts["server"]
    assert ["postgres-data", "/var/lib/postgresql/data"] in mounts["postgres"]
    assert ["s3-data", "/data"] in mounts["s3"]
    used = {m[0] for ms in mounts.values() for m in ms if not m[0].startswith(("/", "./"))}
    assert used == declared


def test_compose_worker_drives_docker_through_the_socket(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    command = worker["command"]
    assert command[command.index("--runner") + 1] == "docker"
    assert "/var/run/docker.sock:/var/run/docker.sock" in worker["volumes"]
    # Job folders: the same path in the worker and on the host (the daemon mounts them).
    work_dir = command[command.index("--work-dir") + 1]
    assert f"{work_dir}:{work_dir}" in worker["volumes"]
    assert _environment(worker)["TMPDIR"] == work_dir
    assert _environment(worker)["WHEELFARM_SERVER_URL"] == "http://server:8080"
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms and set(platforms) <= set(load_platforms())
    # The trade-off of the socket is written down next to it.
    text = COMPOSE_FILE.read_text()
    comment = text[text.index("SECURITY TRADE-OFF") : text.index("/var/run/docker.sock:")]
    assert "root on the host" in comment


def test_compose_environment_is_what_wheelfarm_reads(compose: dict[str, Any]) -> None:
    known = _known_variables()
    services = compose["services"]
    for name in ("server", "worker"):
        env = _environment(services[name])
        unknown = {k for k in env if k.startswith("WHEELFARM_")} - known
        assert not unknown, f"{name}: no code reads {unknown}"
    env = _environment(services["server"])
    assert env["WHEELFARM_ADMIN_TOKEN"] == DOTENV["WHEELFARM_ADMIN_TOKEN"]
    assert _environment(services["worker"])["WHEELFARM_TOKEN"] == DOTENV["WHEELFARM_WORKER_TOKEN"]
    settings = Settings.from_env(env)
    assert settings.admin_token == DOTENV["WHEELFARM_ADMIN_TOKEN"]
    assert settings.data_dir == Path(DATA_DIR)
    logging_config(env)  # a valid log format and level
    # The database is the postgres service's, with its credentials.
    postgres = _environment(services["postgres"])
    url = make_url(settings.database_url)
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
    assert (url.username, url.password, url.database) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    # The bucket is the s3 service's, made by s3-bucket, reached with its credentials.
    storage = open_storage(settings.storage_url)
    assert isinstance(storage, S3Storage)
    assert storage.endpoint_url == "http://s3:9000"
    bucket_job = " ".join(services["s3-bucket"]["entrypoint"])
    assert f"mc mb --ignore-existing store/{storage.bucket}" in bucket_job
    assert '"$S3_ACCESS_KEY" "$S3_SECRET_KEY"' in bucket_job  # $$ escapes compose's own $
    s3 = _environment(services["s3"])
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        s3["MINIO_ROOT_USER"],
        s3["MINIO_ROOT_PASSWORD"],
    )


def test_compose_command_lines_are_ones_the_cli_accepts(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    for name in ("server", "worker"):
        accepts(services[name]["command"], _environment(services[name]), monkeypatch)
    # And the check itself refuses what the CLI refuses.
    with pytest.raises(click.UsageError):
        accepts(["wheelfarm", "worker", "--runner", "dockr"], {}, monkeypatch)
    monkeypatch.delenv("WHEELFARM_SERVER_URL", raising=False)
    with pytest.raises(click.MissingParameter):
        accepts(["wheelfarm", "worker", "--platform", "debian-12-py3.11-x86_64"], {}, monkeypatch)
    with pytest.raises(click.UsageError):
        accepts(["wheelfarm", "serve", "--port", "http"], {}, monkeypatch)
