"""A requirements file's closure, resolved by a worker of the platform (not on this machine).

``resolve_on_server`` sends the inputs' text to ``POST /api/resolutions``, which queues a
resolution job (or answers the stored closure of the same inputs), polls the job until it
ends, and gives the pins. This machine needs no pip, compiler or ``-dev`` package: pip runs,
and prepares sdists' metadata, in the platform's build container on the worker, with the
projects' build settings (index_server/resolutions.py, builder/resolve.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TextIO

import click

from client.warm import report
from client.warm.client import ApiError, WheelfarmClient
from client.warm.pins import Pinned
from client.warm.requirements import Inputs

ACTIVE_STATES = ("queued", "running")


class ResolutionError(Exception):
    """The inputs do not resolve for the platform, or were refused; ``str()`` says why."""


class ResolutionFailed(ResolutionError):
    """The resolution job failed: its category, summary, log tail and where to read more."""

    def __init__(self, client: WheelfarmClient, job: dict[str, Any]) -> None:
        self.job = job
        self.category = job.get("error_category") or job["state"]  # e.g. cancelled
        self.summary = report.first_line(job.get("error_summary") or job.get("reason"))
        lines = [f"{self.category}: {self.summary}"]
        lines += [f"  | {line}" for line in report.log_tail(job.get("log"))]
        lines += [
            f"  console: {client.console_url(job['id'])}",
            f"  api:     {client.api_url(job['id'])}",
        ]
        super().__init__("\n".join(lines))


class ResolutionUnfinished(Exception):
    """The deadline passed with the resolution job still queued or running."""

    def __init__(self, client: WheelfarmClient, job: dict[str, Any], seconds: float) -> None:
        self.job = job
        who = (
            f"no worker of {job['platform']} has claimed it"
            if job["state"] == "queued"
            else f"worker {job.get('worker') or '?'} is running it"
        )
        super().__init__(
            f"resolution job {job['id']} is still {job['state']} after {seconds:g} s ({who}); "
            f"console: {client.console_url(job['id'])}"
        )


@dataclass
class Resolution:
    job: dict[str, Any]  # the job as it ended, with its log
    reused: bool  # the server's stored closure of the same inputs: no new job
    pins: list[Pinned]


def resolve_on_server(
    client: WheelfarmClient,
    platform: str,
    inputs: Inputs,
    *,
    timeout: float,
    poll_interval: float,
    out: TextIO,
) -> Resolution:
    """The closure of ``inputs`` on the platform; raises ResolutionError (failed, refused)
    or ResolutionUnfinished (still queued or running when ``timeout`` passed)."""
    started = time.monotonic()
    try:
        asked = client.request_resolution(
            platform, inputs.requirements.text, inputs.constraints.text
        )
    except ApiError as exc:
        if exc.status in (400, 413):  # the inputs: say which file and line
            raise ResolutionError(inputs.where(exc.message)) from None
        raise
    job, reused = asked["resolution"], bool(asked["reused"])
    if reused:
        when = (job.get("finished_at") or "")[:19].replace("T", " ")
        click.echo(
            f"resolution job {job['id']}: the stored closure of these inputs "
            f"(resolved {when + ' UTC' if when else 'earlier'})",
            file=out,
        )
    else:
        click.echo(
            f"resolving on a worker of {platform}: job {job['id']} "
            f"({client.console_url(job['id'])})",
            file=out,
        )
    state = None
    while True:
        if job["state"] != state:
            state = job["state"]
            click.echo(f"[{time.monotonic() - started:6.1f}s] resolution: {state}", file=out)
        if job["state"] not in ACTIVE_STATES:
            break
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            raise ResolutionUnfinished(client, job, timeout)
        time.sleep(min(poll_interval, left))
        try:
            job = client.build(job["id"])
        except ApiError as exc:
            if exc.status and exc.status < 500:
                raise
            click.echo(f"warning: polling failed, will retry: {exc}", file=out)
    if job["state"] != "succeeded":
        if "log" not in job:
            job = client.build(job["id"])  # with its log
        raise ResolutionFailed(client, job)
    pins = [
        Pinned(
            name=pin["name"],
            version=pin["version"],
            source="resolution",
            filename=pin.get("filename"),
            direct=pin.get("direct"),
        )
        for pin in (job.get("result") or {}).get("closure", [])
    ]
    return Resolution(job, reused, pins)
