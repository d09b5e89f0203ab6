"""The soak's measurements: memory and open files of the server's processes over time.

A sample reads, for each watched process, VmRSS and Threads from ``/proc/PID/status`` and
its open file descriptors from ``/proc/PID/fd`` (sockets counted apart), and the sizes of
the SQLite database and its WAL. Samples are taken between load segments, when no client
connection is open, so that the descriptor counts are not a snapshot of the clients.

Growth is read from the samples around the end of the first minutes (the baseline, after
caches, pools and allocator arenas have filled) to the last ones: the median of three
samples at each end, so that one upload in flight does not count as a leak.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_GROWTH_PCT = 10.0
MAX_GROWTH_MB = 20.0
MAX_FD_GROWTH = 2  # descriptors; a leak of one per N requests would show hundreds


@dataclass
class ProcessSample:
    pid: int
    rss_kb: int
    threads: int
    fds: int
    socket_fds: int

    @property
    def rss_mb(self) -> float:
        return self.rss_kb / 1024


@dataclass
class Sample:
    minute: float  # since the soak started
    processes: dict[str, ProcessSample]  # label -> sample; a missing label: the process died
    db_bytes: int
    wal_bytes: int
    segment: dict[str, float] = field(default_factory=dict)  # the wrk segment before it

    def to_json(self) -> dict[str, object]:
        return {
            "minute": round(self.minute, 2),
            "processes": {k: asdict(v) for k, v in self.processes.items()},
            "db_bytes": self.db_bytes,
            "wal_bytes": self.wal_bytes,
            "segment": self.segment,
        }


def read_process(pid: int) -> ProcessSample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fd_dir = Path(f"/proc/{pid}/fd")
        links = []
        for fd in os.listdir(fd_dir):
            try:
                links.append(os.readlink(fd_dir / fd))
            except OSError:  # closed while listing
                continue
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ProcessSample(
        pid=pid,
        rss_kb=int(fields["VmRSS"].split()[0]),
        threads=int(fields["Threads"]),
        fds=len(links),
        socket_fds=sum(link.startswith("socket:") for link in links),
    )


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def take_sample(minute: float, pids: dict[str, int], database: Path) -> Sample:
    processes = {label: s for label, pid in pids.items() if (s := read_process(pid))}
    wal = database.with_name(database.name + "-wal")
    return Sample(minute, processes, file_size(database), file_size(wal))


# ---------------------------------------------------------------------------------------
# Verdict


@dataclass
class Growth:
    label: str
    rss_start_mb: float
    rss_end_mb: float
    fds_start: float
    fds_end: float
    same_pid: bool

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb

    @property
    def rss_growth_pct(self) -> float:
        return 100 * self.rss_growth_mb / self.rss_start_mb if self.rss_start_mb else 0.0

    @property
    def fd_growth(self) -> float:
        return self.fds_end - self.fds_start

    @property
    def ok(self) -> bool:
        return (
            self.same_pid
            and self.rss_growth_pct < MAX_GROWTH_PCT
            and self.rss_growth_mb < MAX_GROWTH_MB
            and self.fd_growth <= MAX_FD_GROWTH
        )

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "rss_growth_mb": round(self.rss_growth_mb, 1),
            "rss_growth_pct": round(self.rss_growth_pct, 1),
            "fd_growth": self.fd_growth,
            "ok": self.ok,
        }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def growth(samples: list[Sample], baseline_minute: float) -> list[Growth]:
    """Per process: median of 3 samples from the baseline on, against the last 3."""
    start_at = next(
        (i for i, s in enumerate(samples) if s.minute >= baseline_minute), len(samples) - 1
    )
    first = samples[start_at : start_at + 3]
    last = samples[max(start_at, len(samples) - 3) :]
    results = []
    for label in samples[0].processes:
        before = [s.processes[label] for s in first if label in s.processes]
        after = [s.processes[label] for s in last if label in s.processes]
        pids = {s.processes[label].pid for s in samples if label in s.processes}
        everywhere = all(label in s.processes for s in samples)
        results.append(
            Growth(
                label,
                _median([p.rss_mb for p in before]),
                _median([p.rss_mb for p in after]),
                _median([p.fds for p in before]),
                _median([p.fds for p in after]),
                same_pid=len(pids) == 1 and everywhere,
            )
        )
    return results


# ---------------------------------------------------------------------------------------
# Tables


def samples_table(samples: list[Sample]) -> str:
    labels = list(samples[0].processes) if samples else []
    head = "| min | " + " | ".join(f"{x} RSS MB / fds" for x in labels)
    head += " | db MB | WAL MB | req/s | p99 ms | errors |"
    lines = [head, "|" + "---:|" * (len(labels) + 6)]
    for s in samples:
        cells = []
        for label in labels:
            p = s.processes.get(label)
            cells.append(f"{p.rss_mb:.1f} / {p.fds}" if p else "gone")
        seg = s.segment
        lines.append(
            f"| {s.minute:.1f} | "
            + " | ".join(cells)
            + f" | {s.db_bytes / 2**20:.1f} | {s.wal_bytes / 2**20:.1f}"
            + f" | {seg.get('rps', 0):,.0f} | {seg.get('p99_ms', 0):.0f}"
            + f" | {int(seg.get('errors', 0))} |"
        )
    return "\n".join(lines)


def growth_table(results: list[Growth]) -> str:
    lines = [
        "| process | RSS MB start | RSS MB end | growth MB | growth % | fds start | fds end "
        "| same PID | ok |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for g in results:
        lines.append(
            f"| {g.label} | {g.rss_start_mb:.1f} | {g.rss_end_mb:.1f} | {g.rss_growth_mb:+.1f} "
            f"| {g.rss_growth_pct:+.1f}% | {g.fds_start:g} | {g.fds_end:g} "
            f"| {'yes' if g.same_pid else 'NO'} | {'yes' if g.ok else 'NO'} |"
        )
    return "\n".join(lines)
