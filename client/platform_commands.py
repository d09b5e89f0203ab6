"""CLI for a platform's life and for tracked projects, over the server's admin API:
``wheelfarm platform backfill|status|rebuild-stale|delete-files`` and ``wheelfarm track``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from client.warm.client import ApiError, WheelfarmClient
from client.warm.commands import server_options


def _client(server: str, token: str | None) -> WheelfarmClient:
    return WheelfarmClient(server, token)


def _call(client: WheelfarmClient, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return client._json(method, path, **kwargs)
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None


def _progress_line(progress: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {s}" for s, n in sorted(progress["states"].items())) or "no jobs"
    return (
        f"{progress['platform']}: backfill {progress['done']}/{progress['total']} done ({states})"
    )


@click.command("backfill")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Show progress until every backfill job is done.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to wait at most.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@server_options
def backfill_cmd(
    name: str, wait: bool, timeout: float, as_json: bool, server: str, token: str | None
) -> None:
    """Build on platform NAME every project/version with wheels on another platform,
    most downloaded first."""
    client = _client(server, token)
    outcome = _call(client, "POST", f"/api/platforms/{name}/backfill")
    if not as_json:
        for item in outcome["queued"]:
            click.echo(f"queued {item['project']} {item['version']} (job {item['job_id']})")
        click.echo(_progress_line(outcome["progress"]))
    progress = outcome["progress"]
    deadline = time.monotonic() + timeout
    while wait and progress["done"] < progress["total"]:
        if time.monotonic() > deadline:
            raise click.ClickException(f"backfill not done in {timeout:g} s")
        time.sleep(2)
        previous, progress = progress, _call(client, "GET", f"/api/platforms/{name}")["backfill"]
        if not as_json and progress != previous:
            click.echo(_progress_line(progress))
    if as_json:
        click.echo(json.dumps({**outcome, "progress": progress}, indent=2))


@click.command("status")
@click.argument("name")
@server_options
def status_cmd(name: str, server: str, token: str | None) -> None:
    """A platform as the server knows it: image, stale wheels, backfill progress."""
    click.echo(json.dumps(_call(_client(server, token), "GET", f"/api/platforms/{name}"), indent=2))


@click.command("rebuild-stale")
@click.argument("name")
@server_options
def rebuild_stale_cmd(name: str, server: str, token: str | None) -> None:
    """Queue again the wheels of platform NAME built on an older build image."""
    done = _call(_client(server, token), "POST", f"/api/platforms/{name}/rebuild-stale")
    click.echo(f"{name}: {len(done['queued'])} rebuild(s) queued")


@click.command("delete-files")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@server_options
def delete_files_cmd(name: str, yes: bool, server: str, token: str | None) -> None:
    """Delete the files of a retired platform (its index then lists nothing of its own)."""
    if not yes:
        click.confirm(f"Delete every file of platform {name}?", abort=True)
    done = _call(_client(server, token), "DELETE", f"/api/platforms/{name}/files")
    click.echo(f"{name}: {len(done['deleted'])} file(s) deleted")


@click.command("track")
@click.argument("project", required=False)
@click.option("--remove", is_flag=True, help="Stop tracking PROJECT.")
@server_options
def track_cmd(project: str | None, remove: bool, server: str, token: str | None) -> None:
    """Build PROJECT's new upstream releases on every platform it has wheels for, before
    anyone asks. Without PROJECT: list the tracked projects."""
    client = _client(server, token)
    if project is None:
        for item in _call(client, "GET", "/api/tracked")["tracked"]:
            platforms = ", ".join(item["platforms"]) or "no platform wheels yet"
            how = "" if item["explicit"] else " (every built project is tracked)"
            click.echo(f"{item['project']}: {platforms}{how}")
        return
    if remove:
        _call(client, "DELETE", f"/api/tracked/{project}")
        click.echo(f"{project}: no longer tracked")
        return
    done = _call(client, "POST", "/api/tracked", json={"project": project})
    click.echo(f"{done['project']}: tracked; known versions: {', '.join(done['versions']) or '-'}")
