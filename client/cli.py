"""The ``wheelfarm`` command: the client's commands (``wheelfarm worker``, ``wheelfarm
platform ...``, ``wheelfarm track``, ``wheelfarm request`` and ``wheelfarm warm``), which talk
to a server over HTTP (or build images here) and need none of the server's dependencies, and
the server's (``serve``, ``db``, ``token``, ... in ``index_server/cli.py``), loaded only when
one is named: a client-only install (``pip install wheelfarm``, without the ``server`` extra)
answers those with what to install. Every option can also be set by its WHEELFARM_* variable.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click
from packaging.requirements import InvalidRequirement, Requirement

from client import platform_commands
from client.warm.commands import request_cmd, warm_cmd
from platforms import DEFINITIONS_DIR

# The server's commands, by name (the keys of index_server.cli.COMMANDS), and the module that
# makes them; named here so that listing them needs no server dependency.
SERVER_COMMANDS: tuple[str, ...] = (
    "audit",
    "build-settings",
    "cleanup",
    "db",
    "delete",
    "demo",
    "export",
    "files",
    "owner",
    "projects",
    "refresh",
    "serve",
    "token",
    "unyank",
    "yank",
)
SERVER_MODULE = "index_server.cli"
SERVER_EXTRA = "server"
FIRST_PARTY = ("index_server", "client", "builder", "platforms", "storage")


@dataclass(frozen=True)
class RootOptions:
    """The root command's options: the client's commands read ``data_dir`` and
    ``platforms_dir``, the server's make their Settings from ``options`` (all of them)."""

    data_dir: Path
    platforms_dir: Path
    options: Mapping[str, object]


def _root(ctx: click.Context) -> RootOptions:
    return ctx.find_root().obj  # type: ignore[no-any-return]


def missing_server_dependencies(distribution: str = "wheelfarm") -> list[str]:
    """The requirements of the ``server`` extra that are not installed (none when wheelfarm
    itself is not installed, e.g. run from a checkout: importing then tells)."""
    try:
        requires = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    missing = []
    for line in requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        marker = requirement.marker
        if marker is None or not marker.evaluate({"extra": SERVER_EXTRA}):
            continue
        if marker.evaluate({"extra": ""}):
            continue  # a base dependency with a marker, not the extra's
        try:
            importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement.name)
    return missing


def _needs_server(name: str) -> click.Command:
    """A stand-in for a server command where the server is not installed: one line, exit 2
    (whatever the arguments, --help included)."""
    message = f"wheelfarm {name} needs the server: pip install 'wheelfarm[{SERVER_EXTRA}]'"

    def fail() -> None:
        click.echo(message, err=True)
        sys.exit(2)

    return click.Command(
        name,
        callback=fail,
        help=message,
        short_help=f"(needs the server: wheelfarm[{SERVER_EXTRA}])",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def server_command(name: str) -> click.Command:
    """The server's command ``name``, or its stand-in when the server is not installed."""
    if missing_server_dependencies():
        return _needs_server(name)
    try:
        # By name: the client never imports the server (tests/test_import_graph.py).
        module = importlib.import_module(SERVER_MODULE)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] in FIRST_PARTY:
            raise
        return _needs_server(name)  # a dependency missing, wheelfarm not installed
    commands: Mapping[str, click.Command] = module.COMMANDS
    return commands[name]


class WheelfarmGroup(click.Group):
    """The client's commands, and the server's, each loaded when it is named (or listed)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SERVER_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SERVER_COMMANDS:
            return server_command(cmd_name)
        return super().get_command(ctx, cmd_name)


def _worker_token(token: str | None, token_file: Path | None) -> str:
    if token_file is not None:
        lines = token_file.read_text().splitlines()
        token = lines[0].strip() if lines else ""
    if not token:
        raise click.UsageError("give the build token: WHEELFARM_TOKEN, or --token-file")
    return token


@click.command("worker")
@click.option("--server", envvar="WHEELFARM_SERVER_URL", required=True, help="The server's URL.")
@click.option(
    "--token",
    envvar="WHEELFARM_TOKEN",
    default=None,
    help="A build-scoped token; better in WHEELFARM_TOKEN or --token-file than on a command "
    "line, which other users can read in the process list.",
)
@click.option(
    "--token-file",
    envvar="WHEELFARM_TOKEN_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A file holding the build token (first line).",
)
@click.option(
    "--platform",
    "platform_names",
    multiple=True,
    help="Platforms to build for; default: this machine's (host runner) or all.",
)
@click.option(
    "--runner", type=click.Choice(["podman", "docker", "host"]), default="podman", show_default=True
)
@click.option("--jobs", default=1, show_default=True, type=int, help="Builds at once.")
@click.option(
    "--poll",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds between claims when the queue is empty.",
)
@click.option("--max-jobs", default=None, type=int, help="Stop after this many jobs each.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None)
@click.option("--name", default=None, help="Worker name; default: host name and number.")
@click.option(
    "--cgroup-parent",
    envvar="WHEELFARM_BUILD_CGROUP_PARENT",
    default=None,
    help="Cgroup for the build containers (podman/docker --cgroup-parent); give it the "
    "lowest CPU weight so that builds yield to an index server on the same host.",
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice(["build", "resolve"]),
    multiple=True,
    help="The kinds of job to take (builds, resolutions of requirements); default: both.",
)
@click.pass_context
def worker(
    ctx: click.Context,
    server: str,
    token: str | None,
    token_file: Path | None,
    platform_names: tuple[str, ...],
    runner: str,
    jobs: int,
    poll: float,
    max_jobs: int | None,
    work_dir: Path | None,
    name: str | None,
    cgroup_parent: str | None,
    kinds: tuple[str, ...],
) -> None:
    """Build wheels for the server's queue (talks to the server over HTTP only)."""
    import signal
    import socket
    import threading

    from builder.runners import host_mismatches
    from builder.worker import ServerClient, Worker
    from client.logging_setup import configure_logging

    configure_logging()  # one line per event, text or JSON (WHEELFARM_LOG_FORMAT)
    from platforms import PlatformError, iter_platforms, load_platforms

    known = load_platforms(_root(ctx).platforms_dir)
    try:
        chosen = list(iter_platforms(platform_names, known))
    except PlatformError as exc:
        raise click.ClickException(str(exc)) from None
    if not chosen:
        chosen = [p for p in known.values() if runner != "host" or not host_mismatches(p)]
    if not chosen:
        raise click.ClickException("this machine matches no platform: name one with --platform")
    if runner == "host":
        for p in chosen:
            if problems := host_mismatches(p):
                raise click.ClickException(f"host runner cannot build {p.name}: {problems[0]}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    base = name or socket.gethostname()
    # The host runner installs its build tools with pip: give it this machine's CA settings.
    tools_env = {k: v for k, v in os.environ.items() if k in ("PIP_CERT", "SSL_CERT_FILE")}
    workers = [
        Worker(
            ServerClient(server, _worker_token(token, token_file)),
            {p.name: p for p in chosen},
            runner,
            name=base if jobs == 1 else f"{base}-{i + 1}",
            work_dir=work_dir,
            poll_seconds=poll,
            tools_env=tools_env,
            cgroup_parent=cgroup_parent,
            kinds=tuple(sorted(set(kinds))) if kinds else ("build", "resolve"),
        )
        for i in range(jobs)
    ]
    click.echo(f"worker {base}: {jobs} x {runner} for {', '.join(p.name for p in chosen)}")
    threads = [threading.Thread(target=w.run, args=(stop, max_jobs)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)


@click.group()
def platform() -> None:
    """Platforms."""


@platform.command("build-image")
@click.argument("name")
@click.option(
    "--engine", type=click.Choice(["podman", "docker"]), default="podman", show_default=True
)
@click.option(
    "--base/--no-base",
    default=True,
    show_default=True,
    help="First make the base image with debootstrap when it is missing (platforms whose "
    "[image] names a debian_suite; needs root).",
)
@click.pass_context
def platform_build_image(ctx: click.Context, name: str, engine: str, base: bool) -> None:
    """Build a platform's build image (and its Debian base image) and record its id."""
    from builder.images import ImageError, build_image, ensure_base_image, image_name
    from platforms import PlatformError, iter_platforms, load_platforms

    try:
        (chosen,) = iter_platforms([name], load_platforms(_root(ctx).platforms_dir))
        if base and ensure_base_image(chosen, engine):
            click.echo(f"made base image {chosen.base_image}")
        image_id = build_image(chosen, engine)
    except (PlatformError, ImageError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    record = _root(ctx).data_dir / "images.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(record.read_text()) if record.exists() else {}
    known[chosen.name] = {"image": image_name(chosen), "id": image_id, "engine": engine}
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=2) + "\n")
    tmp.replace(record)
    click.echo(f"{image_name(chosen)} {image_id}")


@platform.command("list")
@click.pass_context
def platform_list(ctx: click.Context) -> None:
    from platforms import load_platforms

    for p in load_platforms(_root(ctx).platforms_dir).values():
        notes = "".join(
            f", {note}" for note, on in (("emulated", p.emulated), ("retired", p.retired)) if on
        )
        click.echo(
            f"{p.name:<30} {p.os} {p.release}, CPython {p.python}, {p.arch}, "
            f"glibc {p.glibc}, best tag {p.supported_tags[0]}{notes}"
        )


# A platform's life and tracked projects, over the admin API (client/platform_commands.py).
for _command in (
    platform_commands.backfill_cmd,
    platform_commands.status_cmd,
    platform_commands.rebuild_stale_cmd,
    platform_commands.delete_files_cmd,
):
    platform.add_command(_command)


@click.group(cls=WheelfarmGroup)
@click.option(
    "--data-dir",
    envvar="WHEELFARM_DATA_DIR",
    type=click.Path(path_type=Path),
    default="wheelfarm-data",
    show_default=True,
    help="SQLite file and stored files.",
)
@click.option(
    "--database-url",
    envvar="WHEELFARM_DATABASE_URL",
    default="",
    help="SQLAlchemy URL; default: SQLite in the data dir.",
)
@click.option(
    "--storage-url",
    envvar="WHEELFARM_STORAGE_URL",
    default="",
    help="file:///path; default: files/ in the data dir.",
)
@click.option(
    "--admin-token",
    envvar="WHEELFARM_ADMIN_TOKEN",
    default=None,
    help="If set, a token with this value has the admin scope.",
)
@click.option(
    "--upstream-url",
    envvar="WHEELFARM_UPSTREAM_URL",
    default=None,
    help="Upstream Simple API URL(s); 'none' disables.",
)
@click.option(
    "--read-requires-token/--open-read",
    envvar="WHEELFARM_READ_REQUIRES_TOKEN",
    default=False,
    help="Require a read token for pages and files.",
)
@click.option(
    "--platforms-dir",
    envvar="WHEELFARM_PLATFORMS_DIR",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of platform *.toml definitions; default: the shipped ones.",
)
@click.option("--max-upload-bytes", envvar="WHEELFARM_MAX_UPLOAD_BYTES", type=int, default=None)
@click.option(
    "--page-max-age",
    envvar="WHEELFARM_PAGE_MAX_AGE",
    type=int,
    default=None,
    help="Cache-Control max-age of index pages, in seconds.",
)
@click.option(
    "--upstream-ttl",
    envvar="WHEELFARM_UPSTREAM_TTL",
    type=int,
    default=None,
    help="Seconds an upstream page is fresh (default 600).",
)
@click.option(
    "--upstream-timeout",
    envvar="WHEELFARM_UPSTREAM_TIMEOUT",
    type=float,
    default=None,
    help="Seconds to wait for the upstream (default 10).",
)
@click.option(
    "--private-projects",
    envvar="WHEELFARM_PRIVATE_PROJECTS",
    default=None,
    help="Names or globs never merged with the upstream (comma-separated).",
)
@click.pass_context
def main(ctx: click.Context, **options: object) -> None:
    """wheelfarm: a private index of prebuilt wheels, one per platform."""
    platforms_dir = options["platforms_dir"]
    ctx.obj = RootOptions(
        data_dir=Path(str(options["data_dir"])),
        platforms_dir=platforms_dir if isinstance(platforms_dir, Path) else DEFINITIONS_DIR,
        options=options,
    )


for _command in (worker, platform, platform_commands.track_cmd, request_cmd, warm_cmd):
    main.add_command(_command)

if __name__ == "__main__":
    sys.exit(main())
