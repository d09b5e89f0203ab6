"""A build container's way to the platform's index, and to nothing else.

Build steps that need the index (build dependencies, the import check's dependencies) run
with no network at all (``--network=none``: only the container's own loopback). The worker
opens an :class:`IndexGateway`: a Unix socket in a folder mounted into the container, whose
every connection the worker pipes to the index's host and port, never anywhere else.
Inside, :mod:`builder.container_entry` listens on loopback at the index's port and pipes
to that socket; a mounted ``/etc/hosts`` points the index's host name at loopback, so
the index URL (and TLS host name checks) stay as they are. A build can thus fetch from the
index; any other connection (the internet, the host's other ports, the cloud metadata
address) fails with "network is unreachable".

A :class:`~builder.runners.HostRunner` has no network isolation to offer: it gets
:class:`DirectAccess`, the index URL as it is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

from builder.container_entry import splice
from builder.runners import Mount, Network

GATEWAY_DIR = "/work/gateway"  # in the container: the socket
CONNECT_TIMEOUT = 30.0


class DirectAccess:
    """The index URL unchanged, on the host's network (a HostRunner's builds)."""

    network: Network = "host"
    mounts: Sequence[Mount] = ()

    def __init__(self, index_url: str) -> None:
        self.url = index_url

    entry_args: Sequence[str] = ()

    def __enter__(self) -> DirectAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class IndexGateway:
    """Pipes a no-network container's connections to one index (host and port) only."""

    network: Network = "none"

    def __init__(self, index_url: str, folder: Path) -> None:
        parts = urlsplit(index_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) index URL: {index_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.folder = Path(folder)
        self.url = _url_inside(index_url)
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def socket_path(self) -> Path:
        return self.folder / "index.sock"

    @property
    def mounts(self) -> list[Mount]:
        # Read-only: a Unix socket can still be connected to, but nothing can be written.
        return [
            Mount(self.folder, GATEWAY_DIR),
            Mount(self.folder / "hosts", "/etc/hosts"),
        ]

    @property
    def entry_args(self) -> list[str]:
        """How builder.container_entry opens the gateway's inner end."""
        return ["--index-port", str(self.port), "--index-socket", f"{GATEWAY_DIR}/index.sock"]

    def __enter__(self) -> IndexGateway:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # entered by the container's non-root user
        hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\t{self.host}\n"
        (self.folder / "hosts").write_text(hosts)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        self.socket_path.chmod(0o666)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True, name="index-gateway").start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave the
            # socket listening until that accept() returned.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self.socket_path.unlink(missing_ok=True)
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT)
            upstream.settimeout(None)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._open.update((client, upstream))
        splice(client, upstream)
        with self._lock:
            self._open.difference_update((client, upstream))


def index_access(isolated: bool, index_url: str, folder: Path) -> IndexGateway | DirectAccess:
    """A gateway for runners that isolate the network (containers), else the URL as is."""
    return IndexGateway(index_url, folder) if isolated else DirectAccess(index_url)


def _url_inside(index_url: str) -> str:
    """The index URL as the container uses it: an IP address becomes its loopback."""
    parts = urlsplit(index_url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return index_url  # a name: /etc/hosts points it at loopback
    netloc = "127.0.0.1" if parts.port is None else f"127.0.0.1:{parts.port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{netloc}"))


def _close(sock: socket.socket) -> None:
    """Close ``sock``, waking any thread blocked on it (close() alone would not)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
