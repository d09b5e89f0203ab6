"""What ``warm`` tells: per-distribution status, progress while waiting, summary, JSON."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

ACTIVE_STATES = ("queued", "running")
OK = ("has_wheel", "built", "direct")
PENDING = ("queued", "building")
EXIT_OK, EXIT_FAILED, EXIT_PENDING = 0, 1, 3
LOG_TAIL_LINES = 12
NO_COMPILED_CODE = "built without compiled code"  # a platform wheel with no ELF file


@dataclass
class Item:
    """One distribution of the closure and what became of it."""

    project: str
    version: str
    source: str
    direct: str | None = None  # not from the index: wheelfarm does not build it
    wheel: str | None = None  # a wheel of this version on the platform's page
    had_wheel: bool = False  # it was there before this run
    outcome: str | None = None  # the server's answer to the build request
    job_id: int | None = None
    state: str | None = None  # the build job's state
    error_category: str | None = None
    error_summary: str | None = None
    log_tail: list[str] = field(default_factory=list)
    note: str | None = None  # why there is neither a wheel nor a job
    compiled: bool | None = None  # False: the build's platform wheel has no compiled code

    @property
    def status(self) -> str:
        if self.direct:
            return "direct"
        if self.wheel:
            return "has_wheel" if self.had_wheel else "built"
        if self.note:
            return "error"
        if self.state == "running":
            return "building"
        if self.state == "succeeded":
            return "no_wheel"  # built, yet no wheel for the platform is on its page
        return self.state or "missing"

    @property
    def failed(self) -> bool:
        return self.status not in OK + PENDING

    def detail(self) -> str:
        status = self.status
        if status == "direct":
            return f"not from the index: {self.direct}"
        if self.wheel:
            return self.wheel + (f" ({NO_COMPILED_CODE})" if self.compiled is False else "")
        if self.note:
            return self.note
        if status == "no_wheel":
            return "the build succeeded but no wheel for the platform is on the index"
        if self.error_category or self.error_summary:
            return f"{self.error_category or 'error'}: {first_line(self.error_summary)}"
        return ""


def first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def log_tail(log: str | None, lines: int = LOG_TAIL_LINES) -> list[str]:
    kept = [line.rstrip() for line in (log or "").splitlines() if line.strip()]
    return kept[-lines:]


def exit_code(items: Iterable[Item]) -> int:
    statuses = [i.status for i in items]
    if any(s not in OK + PENDING for s in statuses):
        return EXIT_FAILED
    if any(s in PENDING for s in statuses):
        return EXIT_PENDING
    return EXIT_OK


def job_counts(items: Iterable[Item]) -> dict[str, int]:
    """Counts of the builds this run waits for: queued, building, done, failed."""
    counts = {"queued": 0, "building": 0, "done": 0, "failed": 0}
    for item in items:
        if item.job_id is None:
            continue
        status = item.status
        if status in PENDING:
            counts[status] += 1
        elif status in OK:
            counts["done"] += 1
        else:
            counts["failed"] += 1
    return counts


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


class Progress:
    """Progress of the builds: a bar on a terminal, one line per change otherwise (CI logs)."""

    def __init__(self, items: Sequence[Item], stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.total = sum(1 for i in items if i.job_id is not None)
        self.states = {i.job_id: i.status for i in items if i.job_id is not None}
        self.last_counts: dict[str, int] | None = None
        self.bar: Any = None
        self.finished = 0
        if self.tty and self.total:
            self.bar = click.progressbar(
                length=self.total,
                label="building",
                file=stream,
                show_pos=True,
                show_eta=False,
                item_show_func=lambda counts: _counts_text(counts) if counts else None,
            )
            self.bar.__enter__()

    def update(self, items: Sequence[Item]) -> None:
        counts = job_counts(items)
        if self.bar is not None:
            finished = counts["done"] + counts["failed"]
            self.bar.update(finished - self.finished, counts)
            if finished == self.finished:  # no step: click would not redraw the counts
                self.bar.render_progress()
            self.finished = finished
            return
        elapsed = time.monotonic() - self.started
        for item in items:
            if item.job_id is None:
                continue
            before = self.states.get(item.job_id)
            if before != item.status:
                click.echo(
                    f"[{elapsed:6.1f}s] job {item.job_id} {item.project} {item.version}: "
                    f"{before} -> {item.status}",
                    file=self.stream,
                )
                self.states[item.job_id] = item.status
        if counts != self.last_counts:
            click.echo(f"[{elapsed:6.1f}s] {_counts_text(counts)}", file=self.stream)
            self.last_counts = counts

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A plain text table, columns as wide as their widest cell."""
    cells = [list(header), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def summary(items: Sequence[Item], platform: str, server_urls: Any, waited: bool = False) -> str:
    rows = [
        [i.project, i.version, i.status, str(i.job_id or ""), i.detail()]
        for i in sorted(items, key=lambda i: (i.failed is False, i.project, i.version))
    ]
    counts = Counter(i.status for i in items)
    parts = [
        f"{platform}: {len(items)} distributions; "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        table(rows, ["PROJECT", "VERSION", "STATUS", "JOB", "DETAIL"]),
    ]
    failures = [i for i in items if i.failed]
    for item in failures:
        lines = [f"FAILED {item.project} {item.version}: {item.detail()}"]
        lines += [f"  | {line}" for line in item.log_tail]
        if item.job_id is not None:
            lines += [
                f"  console: {server_urls.console_url(item.job_id)}",
                f"  api:     {server_urls.api_url(item.job_id)}",
            ]
        parts.append("\n".join(lines))
    pending = [i for i in items if i.status in PENDING]
    if pending and not waited:
        parts.append(f"{len(pending)} builds not finished (run with --wait to wait for them)")
    elif pending:
        parts.append(f"{len(pending)} builds not finished before the timeout")
    return "\n\n".join(parts)


def json_report(
    items: Sequence[Item], platform: str, server_urls: Any, inputs: Sequence[str]
) -> dict[str, Any]:
    code = exit_code(items)
    return {
        "server": server_urls.server,
        "platform": platform,
        "inputs": list(inputs),
        "ok": code == EXIT_OK,
        "exit_code": code,
        "counts": dict(Counter(i.status for i in items)),
        "distributions": [
            {
                "project": i.project,
                "version": i.version,
                "source": i.source,
                "status": i.status,
                "ok": not i.failed and i.status not in PENDING,
                "wheel": i.wheel,
                "direct": i.direct,
                "outcome": i.outcome,
                "job_id": i.job_id,
                "state": i.state,
                "error_category": i.error_category,
                "error_summary": i.error_summary,
                "log_tail": i.log_tail,
                "note": i.note,
                "built_without_compiled_code": i.compiled is False,
                "console_url": server_urls.console_url(i.job_id) if i.job_id else None,
                "api_url": server_urls.api_url(i.job_id) if i.job_id else None,
            }
            for i in items
        ],
    }
