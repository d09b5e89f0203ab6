"""The server's commands (``wheelfarm serve``, ``db``, ``token``, ``export``, ...), which the
root command (client/cli.py) loads by name when the server is installed
(``pip install 'wheelfarm[server]'``): COMMANDS, by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from index_server import access_cli
from index_server.cli_settings import root_settings
from index_server.config import Settings
from storage.base import STALE_AFTER


def _settings(ctx: click.Context) -> Settings:
    return root_settings(ctx)


def _services(ctx: click.Context):  # type: ignore[no-untyped-def]
    from index_server.services import build_services

    return build_services(_settings(ctx))


@click.command()
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


@click.group()
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


@click.command()
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
    from client.logging_setup import configure_logging
    from index_server.leftovers import remove_leftovers
    from storage import StorageError

    configure_logging()  # remove_leftovers logs its counts
    try:
        remove_leftovers(_settings(ctx), older_than)
    except (StorageError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command("export")
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


@click.group()
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


@click.command("projects")
@click.pass_context
def projects_cmd(ctx: click.Context) -> None:
    """List hosted projects."""
    from index_server import repository
    from index_server.db.engine import read_connection

    with read_connection(_services(ctx).engine) as conn:
        for p in repository.list_projects(conn):
            click.echo(f"{p['display_name']}  ({p['files']} files)")


@click.command("files")
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


@click.command()
@click.argument("file_id", type=int)
@click.option("--reason", default=None)
@click.pass_context
def yank(ctx: click.Context, file_id: int, reason: str | None) -> None:
    """Yank a file (pip skips it unless pinned exactly)."""
    _file_action(ctx, "yank", file_id, reason)


@click.command()
@click.argument("file_id", type=int)
@click.pass_context
def unyank(ctx: click.Context, file_id: int) -> None:
    """Undo a yank."""
    _file_action(ctx, "unyank", file_id, None)


@click.command()
@click.argument("file_id", type=int)
@click.confirmation_option(prompt="Delete this file for good?")
@click.pass_context
def delete(ctx: click.Context, file_id: int) -> None:
    """Delete a file and, if unused, its bytes."""
    _file_action(ctx, "delete", file_id, None)


@click.command()
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


@click.command()
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


@click.command("build-settings")
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


# By name, as the root command (client/cli.py, SERVER_COMMANDS) lists them.
COMMANDS: dict[str, click.Command] = {
    command.name: command
    for command in (
        serve,
        db,
        cleanup,
        export_cmd,
        token,
        access_cli.owner,
        access_cli.audit,
        projects_cmd,
        files_cmd,
        yank,
        unyank,
        delete,
        refresh,
        demo,
        build_settings_cmd,
    )
    if command.name
}
