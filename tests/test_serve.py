"""``wheelfarm serve``: how gunicorn's workers share the port."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, LiveServer, server_env, start_server, stop_server

LISTEN, ESTABLISHED = "0A", "01"  # socket states in /proc/net/tcp


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path / "data", tmp_path / "server.log")  # 2 workers
    yield server
    stop_server(server)


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _workers(server: LiveServer) -> list[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def _sockets(state: str, local_port: int) -> dict[str, int]:
    """inode -> remote port of each IPv4 TCP socket on ``local_port`` in ``state``."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, st, inode = fields[1], fields[2], fields[3], fields[9]
        if st == state and int(local.split(":")[1], 16) == local_port:
            found[inode] = int(remote.split(":")[1], 16)
    return found


def _owner(inodes: set[str], pids: list[int]) -> dict[str, int]:
    """inode -> the pid of the process holding that socket."""
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:[") and (inode := target[8:-1]) in inodes:
                owners[inode] = pid
    return owners


def test_each_worker_listens_on_its_own_socket_and_takes_its_share(server: LiveServer) -> None:
    port = _port(server)
    deadline = time.monotonic() + 20  # /health answered once the first worker listened
    while len(listeners := _sockets(LISTEN, port)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _workers(server)
    assert len(workers) == 2
    assert sorted(_owner(set(listeners), workers).values()) == sorted(workers)

    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(40)]
    try:
        for client in clients:  # each one answered, and kept alive
            client.request("GET", "/health")
            assert client.getresponse().read() and client.sock is not None
        client_ports = {client.sock.getsockname()[1] for client in clients if client.sock}
        accepted = {
            inode for inode, remote in _sockets(ESTABLISHED, port).items() if remote in client_ports
        }
        assert len(accepted) == 40
        held = Counter(_owner(accepted, workers).values())
    finally:
        for client in clients:
            client.close()
    # The kernel hashes each connection to a worker's socket: 20 each, give or take. One
    # shared socket let whichever worker woke first take them.
    assert sorted(held) == sorted(workers) and min(held.values()) >= 8, held


def test_a_second_server_on_a_taken_port_refuses_to_start(
    server: LiveServer, tmp_path: Path
) -> None:
    second = subprocess.run(
        [str(BIN / "wheelfarm"), "serve", "--host", "127.0.0.1", "--port", str(_port(server))],
        env=server_env(tmp_path / "second"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{_port(server)}: Address already in use"
    ]
    assert not (tmp_path / "second").exists()  # nothing made, nothing migrated
    first = http.client.HTTPConnection("127.0.0.1", _port(server), timeout=10)
    first.request("GET", "/health")
    assert first.getresponse().status == 200
    first.close()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_requests_are_parsed_in_c_and_malformed_ones_refused(
    server: LiveServer, tmp_path: Path
) -> None:
    # The test extra installs the fast extra, as the load benchmark runs the server.
    assert "HTTP parser: C (gunicorn_h1c)" in (tmp_path / "server.log").read_text()
    port = _port(server)
    two = _raw(
        port, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert two.count(b"HTTP/1.1 200 OK\r\n") == 2  # pipelined, both answered
    for bad in (
        b"GET /health HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",  # space in a field name
        b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: a\r\n\r\n",
        b"G\x00T /health HTTP/1.1\r\nHost: a\r\n\r\n",
    ):
        assert _raw(port, bad).startswith(b"HTTP/1.1 400 "), bad
