"""The ``wheelfarm`` command. Every option can also be set by its WHEELFARM_* variable."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from index_server import access_cli
from index_server.config import Settings, split_list
from storage.base import STALE_AFTER


def _settings(ctx: click.Context) -> Settings:
    return ctx.find_root().obj  # type: ignore[no-any-return]


def _services(ctx: click.Context):  # type: ignore[no-untyped-def]
    from index_server.services import build_services

    return build_services(_settings(ctx))


@click.group()
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
    # Options override the environment; settings without an option come from it.
    ctx.obj = Settings.from_env(
        None,
        data_dir=options["data_dir"],
        database_url=options["database_url"],
        storage_url=options["storage_url"],
        admin_token=options["admin_token"] or None,
        upstream_urls=options["upstream_url"],
        read_requires_token=options["read_requires_token"],
        platforms_dir=options["platforms_dir"],
        max_upload_bytes=options["max_upload_bytes"],
        page_max_age=options["page_max_age"],
        upstream_ttl=options["upstream_ttl"],
        upstream_timeout=options["upstream_timeout"],
        private_projects=split_list(str(options["private_projects"]))
        if options["private_projects"]
        else None,
    )


@main.command()
@click.option("--host", envvar="WHEELFARM_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="WHEELFARM_PORT", default=8080, show_default=True, type=int)
@click.option("--workers", default=None, type=int, help="Processes; default: CPU count.")
@click.option("--threads", default=4, show_default=True, type=int, help="Threads per worker.")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.pass_context
def serve(
    ctx: click.Context, host: str, port: int, workers: int | None, threads: int, access_log: bool
) -> None:
    """Run the index server (gunicorn)."""
    from index_server.serve import CannotListen, default_workers
    from index_server.serve import serve as run

    try:
        run(_settings(ctx), host, port, workers or default_workers(), threads, access_log)
    except CannotListen as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply Alembic migrations up to the newest schema."""
    from index_server.db.migrate import current_revision, upgrade

    url = _settings(ctx).resolved_database_url
    _settings(ctx).data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    click.echo(f"database at revision {current_revision(url)}")


@main.command()
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=STALE_AFTER,
    show_default=True,
    help="Seconds; younger leftovers may belong to a write still running.",
)
@click.pass_context
def cleanup(ctx: click.Context, older_than: float) -> None:
    """Remove what killed servers left behind: upload scratch folders, temporary blob files,
    unfinished S3 multipart uploads (also done at `serve` start)."""
    from index_server.leftovers import remove_leftovers
    from index_server.logging_setup import configure_logging
    from storage import StorageError

    configure_logging()  # remove_leftovers logs its counts
    try:
        remove_leftovers(_settings(ctx), older_than)
    except (StorageError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command("export")
@click.option(
    "--target",
    envvar="WHEELFARM_EXPORT_URL",
    required=True,
    help="A folder (for nginx) or s3://BUCKET/PREFIX?endpoint_url=... (for a CDN).",
)
@click.option("--follow", is_flag=True, help="Then keep it current (every change within 1 s).")
@click.option("--poll", default=0.2, show_default=True, help="Seconds between change checks.")
@click.pass_context
def export_cmd(ctx: click.Context, target: str, follow: bool, poll: float) -> None:
    """Write every page and file of every platform to a static target (open-read indexes)."""
    from index_server.export.command import run_export
    from index_server.export.exporter import ReadProtected
    from index_server.export.targets import ExportBusy

    try:
        run_export(_settings(ctx), target, follow, poll)
    except (ExportBusy, ReadProtected, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--scope", type=click.Choice(["read", "upload", "build", "admin"]), required=True)
@click.option("--name", default=None, help="Unique; default: the scope and a random suffix.")
@click.option("--owner", default=None, help="The user or team it belongs to; default: its name.")
@click.option(
    "--project", "projects", multiple=True, help="May write only these (names or globs); repeat."
)
@click.option("--platform", default=None, help="A build token's platform (claims only its jobs).")
@click.option("--worker", default=None, help="A build token's worker name.")
@click.pass_context
def token_create(
    ctx: click.Context,
    scope: str,
    name: str | None,
    owner: str | None,
    projects: tuple[str, ...],
    platform: str | None,
    worker: str | None,
) -> None:
    """Create a token and print its secret (shown only once)."""
    import secrets

    from index_server.auth import create_token

    services = _services(ctx)
    if platform and platform not in services.platforms:
        raise click.ClickException(f"unknown platform {platform!r}")
    try:
        _id, secret = create_token(
            services.engine,
            name or f"{scope}-{secrets.token_hex(4)}",
            scope,
            owner=owner,
            projects=list(projects) or None,
            platform=platform,
            worker=worker,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(secret)


@token.command("list")
@click.pass_context
def token_list(ctx: click.Context) -> None:
    from index_server.auth import list_tokens

    for t in list_tokens(_services(ctx).engine):
        state = "revoked" if t["revoked"] else "active"
        bound = " ".join(
            f"{k}={t[k]}" for k in ("owner", "platform", "worker") if t[k] and t[k] != t["name"]
        )
        scoped = f" projects={','.join(t['projects'])}" if t["projects"] else ""
        click.echo(
            f"{t['id']:>4}  {t['scope']:<7} {state:<8} {t['prefix']}…  {t['name']}"
            + (f"  {bound}" if bound else "")
            + scoped
        )


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def token_revoke(ctx: click.Context, token_id: int) -> None:
    from index_server.auth import revoke_token

    if not revoke_token(_services(ctx).engine, token_id):
        raise click.ClickException(f"no active token with id {token_id}")
    click.echo(f"revoked token {token_id}")


main.add_command(access_cli.owner)
main.add_command(access_cli.audit)


def _worker_token(token: str | None, token_file: Path | None) -> str:
    if token_file is not None:
        lines = token_file.read_text().splitlines()
        token = lines[0].strip() if lines else ""
    if not token:
        raise click.UsageError("give the build token: WHEELFARM_TOKEN, or --token-file")
    return token


@main.command("projects")
@click.pass_context
def projects_cmd(ctx: click.Context) -> None:
    """List hosted projects."""
    from index_server import repository
    from index_server.db.engine import read_connection

    with read_connection(_services(ctx).engine) as conn:
        for p in repository.list_projects(conn):
            click.echo(f"{p['display_name']}  ({p['files']} files)")


@main.command("files")
@click.argument("project")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def files_cmd(ctx: click.Context, project: str, as_json: bool) -> None:
    """List a project's files with their ids."""
    from packaging.utils import canonicalize_name

    from index_server import repository
    from index_server.db.engine import read_connection
    from index_server.views.api import file_json

    with read_connection(_services(ctx).engine) as conn:
        records = repository.list_project_files(conn, canonicalize_name(project))
    if as_json:
        click.echo(json.dumps([file_json(r) for r in records], indent=2))
        return
    for r in records:
        flags = f" [yanked: {r.yanked_reason or ''}]" if r.yanked else ""
        click.echo(f"{r.id:>6}  {r.platform or '*':<28} {r.filename}{flags}")


def _file_action(ctx: click.Context, action: str, file_id: int, reason: str | None) -> None:
    from index_server import admin

    svc = _services(ctx)
    actor = "cli"
    try:
        if action == "yank":
            record = admin.yank_file(svc, file_id, reason, actor)
        elif action == "unyank":
            record = admin.unyank_file(svc, file_id, actor)
        else:
            record = admin.delete_file(svc, file_id, actor)
    except admin.NotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{action}: {record.filename}")


@main.command()
@click.argument("file_id", type=int)
@click.option("--reason", default=None)
@click.pass_context
def yank(ctx: click.Context, file_id: int, reason: str | None) -> None:
    """Yank a file (pip skips it unless pinned exactly)."""
    _file_action(ctx, "yank", file_id, reason)


@main.command()
@click.argument("file_id", type=int)
@click.pass_context
def unyank(ctx: click.Context, file_id: int) -> None:
    """Undo a yank."""
    _file_action(ctx, "unyank", file_id, None)


@main.command()
@click.argument("file_id", type=int)
@click.confirmation_option(prompt="Delete this file for good?")
@click.pass_context
def delete(ctx: click.Context, file_id: int) -> None:
    """Delete a file and, if unused, its bytes."""
    _file_action(ctx, "delete", file_id, None)


@main.command()
@click.argument("projects", nargs=-1, required=True)
@click.pass_context
def refresh(ctx: click.Context, projects: tuple[str, ...]) -> None:
    """Refetch projects' upstream pages now, whatever their freshness."""
    from packaging.utils import canonicalize_name

    from index_server.db.engine import read_connection
    from index_server.upstream.pages import read_states, upstream_view

    svc = _services(ctx)
    if not svc.settings.upstream_urls:
        raise click.ClickException("no upstream is configured (WHEELFARM_UPSTREAM_URL=none)")
    failed = False
    for name in projects:
        project = canonicalize_name(name)
        with read_connection(svc.engine) as conn:
            states = read_states(conn, project)
        view = upstream_view(svc, project, states, force=True)
        for page in view.pages:
            state = "found" if page.status == 200 else "not found"
            click.echo(f"{project}: {page.upstream}: {state}")
        for error in view.stale + view.unavailable:
            failed = True
            click.echo(f"{project}: refresh failed: {error}", err=True)
    if failed:
        sys.exit(1)


@main.command()
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
    from index_server.logging_setup import configure_logging

    configure_logging()  # one line per event, text or JSON (WHEELFARM_LOG_FORMAT)
    from platforms import PlatformError, iter_platforms, load_platforms

    known = load_platforms(_settings(ctx).platforms_dir)
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


@main.command()
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--keep-serving/--exit",
    default=True,
    show_default=True,
    help="Keep the server and worker running after the demo.",
)
@click.option(
    "--runner",
    type=click.Choice(["podman", "docker", "host"]),
    default=None,
    help="Default: a container engine if one works here, else host.",
)
@click.pass_context
def demo(ctx: click.Context, port: int, keep_serving: bool, runner: str | None) -> None:
    """Serve, build a C-extension wheel for this machine, and pip install it."""
    from index_server.demo import run_demo

    run_demo(_settings(ctx), port, keep_serving, runner)


@main.command("build-settings")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def build_settings_cmd(ctx: click.Context, path: Path) -> None:
    """Apply per-project build settings from a TOML file (also WHEELFARM_BUILD_SETTINGS_FILE
    at server start)."""
    from index_server.build_settings_file import SettingsFileError, apply_settings_file

    try:
        projects = apply_settings_file(_services(ctx), path)
    except SettingsFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"build settings set for: {', '.join(projects) or 'no project'}")


@main.group()
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
        (chosen,) = iter_platforms([name], load_platforms(_settings(ctx).platforms_dir))
        if base and ensure_base_image(chosen, engine):
            click.echo(f"made base image {chosen.base_image}")
        image_id = build_image(chosen, engine)
    except (PlatformError, ImageError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    record = _settings(ctx).data_dir / "images.json"
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

    for p in load_platforms(_settings(ctx).platforms_dir).values():
        notes = "".join(
            f", {note}" for note, on in (("emulated", p.emulated), ("retired", p.retired)) if on
        )
        click.echo(
            f"{p.name:<30} {p.os} {p.release}, CPython {p.python}, {p.arch}, "
            f"glibc {p.glibc}, best tag {p.supported_tags[0]}{notes}"
        )


# A platform's life and tracked projects, over the admin API (index_server/platform_commands.py).
from index_server import platform_commands  # noqa: E402

for _command in (
    platform_commands.backfill_cmd,
    platform_commands.status_cmd,
    platform_commands.rebuild_stale_cmd,
    platform_commands.delete_files_cmd,
):
    platform.add_command(_command)
main.add_command(platform_commands.track_cmd)


# Client commands for CI jobs and admins (index_server/warm/).
from index_server.warm.commands import request_cmd, warm_cmd  # noqa: E402

main.add_command(request_cmd)
main.add_command(warm_cmd)


if __name__ == "__main__":
    sys.exit(main())
