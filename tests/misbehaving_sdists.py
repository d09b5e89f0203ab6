"""Sdists whose ``setup.py`` misbehaves on purpose, for the build sandbox tests.

Each is a real setuptools sdist of a pure package; its ``setup.py`` first does something a
build must not be able to do (or must not be able to do for long), prints what happened
with a ``SANDBOX`` prefix (``pip wheel --verbose`` puts it in the build log), and then,
when it is still alive, builds normally.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.builder_helpers import make_sdist

# Places in the container a build must not write to: the image, and every mount but its
# output folder.
ESCAPE_TARGETS = (
    "/escape",
    "/etc/escape",
    "/etc/hosts",
    "/usr/lib/python3/dist-packages/escape.py",
    "/opt/buildtools/escape",
    "/home/escape",
    "/work/escape",
    "/work/in/escape",
    "/work/gateway/escape",
    "/work/bin/container_entry.py",
)


def _misbehaving_sdist(directory: Path, name: str, prelude: str) -> Path:
    package = canonicalize_name(name).replace("-", "_")
    setup_py = (
        textwrap.dedent(prelude)
        + f"\nfrom setuptools import setup\n\nsetup(packages=[{package!r}])\n"
    )
    files = {"setup.py": setup_py, f"{package}/__init__.py": "ANSWER = 42\n"}
    return make_sdist(directory, name, "1.0", files)


def make_snooping_sdist(directory: Path, host_paths: Sequence[str]) -> Path:
    """Prints every environment variable, every process's environment and command line it
    can read, and tries to read host files named by their host paths."""
    prelude = f"""\
    import glob, os
    for key, value in sorted(os.environ.items()):
        print(f"SANDBOX env {{key}}={{value}}")
    for path in sorted(glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline")):
        try:
            with open(path, "rb") as fh:
                print("SANDBOX", path, fh.read().replace(b"\\0", b" ").decode(errors="replace"))
        except OSError as exc:
            print("SANDBOX", path, "unreadable:", exc)
    for path in {list(host_paths)!r} + ["/root", "/home", "/run/secrets", "/etc/wheelfarm"]:
        try:
            if os.path.isdir(path):
                print("SANDBOX read", path, os.listdir(path))
            else:
                with open(path) as fh:
                    print("SANDBOX read", path, fh.read())
        except OSError as exc:
            print("SANDBOX blocked read", path, exc)
    print("SANDBOX snooping done", flush=True)
    """
    return _misbehaving_sdist(directory, "wf-snoop", prelude)


def make_escaping_sdist(directory: Path, host_paths: Sequence[str]) -> Path:
    """Tries to write into the image, the read-only mounts, and host paths."""
    targets = [*host_paths, *ESCAPE_TARGETS]
    prelude = f"""\
    import os
    for path in {targets!r}:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as fh:
                fh.write("escaped\\n")
            print("SANDBOX WROTE", path)
        except OSError as exc:
            print("SANDBOX blocked write", path, exc)
    print("SANDBOX writing done", flush=True)
    """
    return _misbehaving_sdist(directory, "wf-escape", prelude)


def make_phoning_sdist(
    directory: Path, tcp: Sequence[tuple[str, int]], udp: Sequence[tuple[str, int]]
) -> Path:
    """Connects to hosts other than the index (TCP and UDP), looks up a public name, and
    fetches the index URL it was given (which must work)."""
    prelude = f"""\
    import os, socket, urllib.request
    for host, port in {list(tcp)!r} + [("1.1.1.1", 443), ("169.254.169.254", 80)]:
        try:
            socket.create_connection((host, port), timeout=5).close()
            print("SANDBOX CONNECTED", host, port)
        except OSError as exc:
            print("SANDBOX blocked connect", host, port, exc)
    for host, port in {list(udp)!r}:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"phoned home", (host, port))
            print("SANDBOX SENT", host, port)
        except OSError as exc:
            print("SANDBOX blocked send", host, port, exc)
    try:
        print("SANDBOX RESOLVED", socket.gethostbyname("pypi.org"))
    except OSError as exc:
        print("SANDBOX blocked lookup", exc)
    with urllib.request.urlopen(os.environ["PIP_INDEX_URL"], timeout=30) as response:
        print("SANDBOX index answered", response.status, flush=True)
    """
    return _misbehaving_sdist(directory, "wf-phone", prelude)


def make_fork_bomb_sdist(directory: Path) -> Path:
    """Forks without end: every child forks too."""
    prelude = """\
    import os, time
    print("SANDBOX forking", flush=True)
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.001)
    """
    return _misbehaving_sdist(directory, "wf-forkbomb", prelude)


def make_memory_hog_sdist(directory: Path) -> Path:
    """Allocates (and touches) 64 MiB after 64 MiB, without end."""
    prelude = """\
    hoard = []
    print("SANDBOX allocating", flush=True)
    while True:
        hoard.append(bytearray(b"\\1") * (64 * 1024 * 1024))
    """
    return _misbehaving_sdist(directory, "wf-memhog", prelude)


def make_spinning_sdist(directory: Path) -> Path:
    """Never finishes: spins on the CPU."""
    prelude = """\
    print("SANDBOX spinning", flush=True)
    while True:
        pass
    """
    return _misbehaving_sdist(directory, "wf-spin", prelude)
