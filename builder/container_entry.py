"""The first process of a build container: runs the build and keeps it within bounds.

Started by :func:`builder.build.build_wheel` in front of the build command (``python
container_entry.py [--index-port P --index-socket S] -- COMMAND...``), as the container's
PID 1. It

- opens the inner end of the index gateway (:mod:`builder.index_gateway`): it listens on
  the container's own loopback at the index's port and pipes every connection to a Unix
  socket mounted from the host, which leads to the index and nowhere else;
- runs the command and reaps every process that ends (orphans come to PID 1);
- stops the whole build at once when it hits the container's process limit (a fork bomb
  would otherwise hold every slot until the time limit);
- prints which limits the build hit (``WHEELFARM-LIMITS {"memory": 1, "pids": 0}``: the
  kernel's counts of OOM kills and refused forks), so a failure can say why.

Standard library only: it runs on the build image's Python, whatever that is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

CHUNK = 65536
LIMITS_MARKER = "WHEELFARM-LIMITS "
WATCH_SECONDS = 0.25
# The kernel's counters, cgroup v2 first, then v1: (file, the line's key).
MEMORY_EVENTS = (
    (Path("/sys/fs/cgroup/memory.events"), "oom_kill"),
    (Path("/sys/fs/cgroup/memory/memory.oom_control"), "oom_kill"),
)
PIDS_EVENTS = (
    (Path("/sys/fs/cgroup/pids.events"), "max"),
    (Path("/sys/fs/cgroup/pids/pids.events"), "max"),
)


def pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction until its end, then pass the end on (half-close)."""
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:  # a reset: end both directions
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def splice(one: socket.socket, other: socket.socket) -> None:
    """Copy both directions until both have ended, then close both sockets."""
    forward = threading.Thread(target=pipe, args=(one, other), daemon=True)
    forward.start()
    pipe(other, one)
    forward.join()
    one.close()
    other.close()


def serve_gateway(listener: socket.socket, socket_path: str) -> None:
    while True:
        client, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(socket_path)
            threading.Thread(target=splice, args=(client, upstream), daemon=True).start()
        except (OSError, RuntimeError):  # RuntimeError: no thread to be had (process limit)
            client.close()
            upstream.close()


def open_gateway(port: int, socket_path: str) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    threading.Thread(target=serve_gateway, args=(listener, socket_path), daemon=True).start()


def kernel_count(candidates: tuple[tuple[Path, str], ...]) -> int:
    for path, key in candidates:
        try:
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except (OSError, ValueError):
            continue
    return 0


def stop_everything() -> None:
    """SIGKILL every other process of the container (only ever as its PID 1)."""
    if os.getpid() != 1:
        return
    for _ in range(20):  # a fork bomb may fork between two rounds
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        time.sleep(0.05)


def watch_process_limit(start: int, stopped: threading.Event) -> None:
    while not stopped.is_set():
        if kernel_count(PIDS_EVENTS) > start:
            print("wheelfarm: the build hit the process limit; stopping it", flush=True)
            stopped.set()
            stop_everything()
            return
        time.sleep(WATCH_SECONDS)


def run(command: list[str]) -> int:
    """Run ``command``, reaping every child that ends; its exit status."""
    pid = os.posix_spawnp(command[0], command, os.environ)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: os.kill(pid, number))
    while True:
        try:
            ended, status = os.wait()
        except ChildProcessError:
            return 1
        if ended == pid:
            return os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index-port", type=int)
    parser.add_argument("--index-socket")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.index_port and args.index_socket:
        open_gateway(args.index_port, args.index_socket)

    memory_start, pids_start = kernel_count(MEMORY_EVENTS), kernel_count(PIDS_EVENTS)
    stopped = threading.Event()
    watcher = threading.Thread(target=watch_process_limit, args=(pids_start, stopped))
    watcher.daemon = True
    watcher.start()
    status = run(command)
    stopped.set()
    hit = {
        "memory": kernel_count(MEMORY_EVENTS) - memory_start,
        "pids": kernel_count(PIDS_EVENTS) - pids_start,
    }
    sys.stdout.flush()
    if any(hit.values()):
        print(LIMITS_MARKER + json.dumps(hit), flush=True)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
