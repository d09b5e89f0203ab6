"""``wheelfarm demo``: the whole loop on embedded defaults, on this machine.

Starts the index server and one build worker, asks for a wheel of a real package with a C
extension (MarkupSafe, from the upstream index) for this machine's platform, waits for the
worker to build it (in a Podman/Docker container when one works here, else with the host
runner), and pip-installs it from the platform's index into a fresh venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click

from builder.images import image_id
from builder.runners import host_mismatches
from index_server.auth import create_token
from index_server.config import Settings
from index_server.services import build_services
from platforms import Platform

DEMO_PROJECT = "markupsafe"
DEMO_VERSION = "3.0.2"
DEMO_MODULE = "markupsafe._speedups"


def pick_runner(platform: Platform) -> str:
    """A container engine when it runs here and has the platform's base image; else host."""
    for engine in ("podman", "docker"):
        if shutil.which(engine) is None:
            continue
        works = subprocess.run([engine, "info"], capture_output=True).returncode == 0
        if works and image_id(platform.base_image, engine):
            return engine
    return "host"


def host_platform(platforms: dict[str, Platform]) -> Platform:
    for platform in platforms.values():
        if not host_mismatches(platform):
            return platform
    raise click.ClickException(
        "this machine matches none of the platforms in platforms/: the demo builds for the "
        "machine it runs on"
    )


def _api(url: str, token: str, body: object | None = None) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)  # type: ignore[no-any-return]


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise click.ClickException(f"{url} did not answer within {seconds:.0f} s")


def run_demo(settings: Settings, port: int, keep_serving: bool, runner: str | None) -> None:
    services = build_services(settings)
    platform = host_platform(services.platforms)
    runner = runner or pick_runner(platform)
    admin = create_token(services.engine, "demo-admin", "admin")[1]
    build = create_token(services.engine, "demo-worker", "build")[1]
    server_url = f"http://127.0.0.1:{port}"
    wheelfarm = [sys.executable, "-m", "client.cli"]
    env = {**os.environ, "WHEELFARM_DATA_DIR": str(settings.data_dir)}
    say = click.echo
    say(f"platform of this machine: {platform.name}; builds run with the {runner} runner")
    server = subprocess.Popen([*wheelfarm, "serve", "--port", str(port)], env=env)
    worker = None
    started = time.monotonic()
    try:
        _wait_for(server_url + "/health", 30)
        say(f"index server: {server_url}/{platform.name}/simple/")
        worker = subprocess.Popen(
            [
                *wheelfarm,
                "worker",
                "--server",
                server_url,
                "--token",
                build,
                "--runner",
                runner,
                "--platform",
                platform.name,
                "--poll",
                "1",
            ],
            env=env,
        )
        queued = _api(
            f"{server_url}/api/builds",
            admin,
            {"project": DEMO_PROJECT, "version": DEMO_VERSION, "platforms": [platform.name]},
        )
        job = queued["requests"][0]
        say(f"requested {DEMO_PROJECT} {DEMO_VERSION}: {job['outcome']}")
        if job["job_id"] is not None:
            state = _wait_for_job(server_url, admin, job["job_id"], 900)
            if state["state"] != "succeeded":
                raise click.ClickException(
                    f"the build {state['state']}: {state.get('error_summary')}\n"
                    f"{state.get('log', '')[-2000:]}"
                )
            result = state["result"] or {}
            say(
                f"built {', '.join(result.get('wheels', []))} in {state['build_seconds']:.1f} s"
                f" (image {state['image_id'][:19]}); OS packages needed at run time: "
                f"{', '.join(result.get('os_packages', [])) or 'none beyond libc'}"
            )
        with tempfile.TemporaryDirectory(prefix="wheelfarm-demo-") as tmp:
            venv = Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
            pip_env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(venv / "bin" / "python"),
                    "install",
                    "--no-cache-dir",
                    "--only-binary",
                    DEMO_PROJECT,
                    "--index-url",
                    f"{server_url}/{platform.name}/simple/",
                    f"{DEMO_PROJECT}=={DEMO_VERSION}",
                ],
                check=True,
                env={**pip_env, "PIP_CONFIG_FILE": os.devnull},
            )
            imported = subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-c",
                    f"import {DEMO_MODULE} as m; print(m.__file__)",
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        say(f"pip installed the wheel from the index; imported {imported}")
        say(f"demo done in {time.monotonic() - started:.1f} s")
        if keep_serving:
            say(f"the server and worker keep running at {server_url}; Ctrl-C stops them")
            server.wait()
    finally:
        for process in (worker, server):
            if process and process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()


def _wait_for_job(server_url: str, token: str, job_id: int, seconds: float) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        state = _api(f"{server_url}/api/builds/{job_id}", token)
        if state["state"] != last:
            click.echo(f"build {job_id}: {state['state']}")
            last = state["state"]
        if state["state"] in ("succeeded", "failed", "skipped", "cancelled"):
            return state
        time.sleep(1)
    raise click.ClickException(f"build {job_id} did not finish within {seconds:.0f} s")
