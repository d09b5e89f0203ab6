"""A real S3 endpoint for tests: moto's standalone server in a subprocess, spoken to over HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.conftest import free_port, wait_until_answering

REGION = "us-east-1"
# boto3 reads these; the values only need to be consistent (moto checks no signatures).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "wheelfarm-test-key",
    "AWS_SECRET_ACCESS_KEY": "wheelfarm-test-secret",
    "AWS_DEFAULT_REGION": REGION,
    # Hermetic: no config or credentials files of this machine, no instance metadata lookups.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def aws_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AWS setting, plus the test ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO_"))}
    env.update(AWS_ENV)
    env.update(extra)
    return env


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self) -> Any:
        """A plain boto3 client, to look at the bucket independently of S3Storage."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            config=Config(signature_version="s3v4"),
        )

    def new_bucket(self) -> str:
        name = f"wf-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name


def start_moto(log_path: Path) -> MotoServer:
    port = free_port()
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=aws_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_until_answering(endpoint + "/moto-api/", process, log_path, "moto server")
    return MotoServer(endpoint, process, log_path)


def stop_moto(server: MotoServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def keys_in(server: MotoServer, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def open_uploads(server: MotoServer, bucket: str) -> list[dict[str, Any]]:
    return list(server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def logged_statuses(server: MotoServer, method: str, path: str) -> list[int]:
    """The statuses of the requests moto's access log shows for ``method`` on ``path``."""
    log = re.sub(r"\x1b\[[0-9;]*m", "", server.log_path.read_text())  # werkzeug colours some
    pattern = re.compile(rf'"{method} {re.escape(path)} HTTP/1\.1" (\d{{3}}) ')
    return [int(m.group(1)) for m in pattern.finditer(log)]
