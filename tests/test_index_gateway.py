"""The index gateway's two ends, on this machine (the container side is in test_build_sandbox).

The host end (``IndexGateway``) pipes a Unix socket to the index; the inner end
(``builder/container_entry.py``) listens on a TCP port and pipes to that socket, then runs
the build command. Here both run as plain processes, with a local HTTP server as the index.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from builder.classify import FailureCategory, classify_log, limits_hit
from builder.container_entry import LIMITS_MARKER
from builder.index_gateway import DirectAccess, IndexGateway, index_access
from tests.builder_helpers import serve_directory

ENTRY = Path(__file__).resolve().parent.parent / "builder" / "container_entry.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("index_url", "inside"),
    [
        ("http://127.0.0.1:8080/p/simple/", "http://127.0.0.1:8080/p/simple/"),
        ("http://10.1.2.3/p/simple/", "http://127.0.0.1/p/simple/"),
        ("http://[::1]:81/simple/", "http://127.0.0.1:81/simple/"),
        (
            "http://__token__:s3cret@10.0.0.5:8080/simple/",
            "http://__token__:s3cret@127.0.0.1:8080/simple/",
        ),
        ("https://index.example.org/simple/", "https://index.example.org/simple/"),  # /etc/hosts
    ],
)
def test_the_index_url_inside_the_container(tmp_path: Path, index_url: str, inside: str) -> None:
    gateway = IndexGateway(index_url, tmp_path)
    assert gateway.url == inside
    assert gateway.port == (
        443 if index_url.startswith("https") else (urllib.parse.urlsplit(index_url).port or 80)
    )


def test_refuses_what_is_not_an_http_index(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an http"):
        IndexGateway("file:///srv/simple/", tmp_path)


def test_runners_without_isolation_get_the_url_as_it_is(tmp_path: Path) -> None:
    access = index_access(False, "http://127.0.0.1:9/simple/", tmp_path)
    assert isinstance(access, DirectAccess)
    assert access.url == "http://127.0.0.1:9/simple/" and not access.mounts
    assert access.network == "host" and not access.entry_args


def test_both_ends_carry_http_to_the_index_and_hand_back_the_exit_status(tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "hello.txt").write_text("hello through the gateway\n")
    with serve_directory(root) as (base, _process):
        with IndexGateway(base + "/", tmp_path / "gw") as gateway:
            assert oct(gateway.socket_path.stat().st_mode & 0o777) == "0o666"
            assert "index.sock" in gateway.entry_args[-1]
            port = free_port()  # the inner end listens here, as on the container's loopback
            fetch = (
                "import sys, urllib.request; "
                f"body = urllib.request.urlopen('http://127.0.0.1:{port}/hello.txt').read(); "
                "print(body.decode().strip()); sys.exit(3)"
            )
            done = subprocess.run(
                [
                    sys.executable,
                    str(ENTRY),
                    "--index-port",
                    str(port),
                    "--index-socket",
                    str(gateway.socket_path),
                    "--",
                    sys.executable,
                    "-c",
                    fetch,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert done.stdout.strip() == "hello through the gateway", done.stderr
        assert done.returncode == 3
        # Closed: nothing is listening on the socket any more.
        with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError):
            sock.connect(str(gateway.socket_path))


def test_the_entry_reports_a_command_killed_by_a_signal() -> None:
    done = subprocess.run(
        [sys.executable, str(ENTRY), "--", "sh", "-c", "kill -KILL $$"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 128 + 9


def test_limits_reported_by_the_entry_classify_the_failure() -> None:
    log = "building...\nKilled\n" + LIMITS_MARKER + '{"memory": 1, "pids": 0}\n'
    assert limits_hit(log) == {"memory": 1, "pids": 0}
    assert classify_log(log) == FailureCategory.RESOURCE_LIMIT
    assert classify_log(log, timed_out=True) == FailureCategory.BUILD_TIMEOUT
    assert limits_hit("no marker\n") == {}
    assert limits_hit(LIMITS_MARKER + "{not json\n") == {}
    assert classify_log(LIMITS_MARKER + '{"memory": 0, "pids": 0}\n') == FailureCategory.OTHER
