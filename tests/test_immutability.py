"""Files are immutable by what pip sees, not by the filename's spelling (issue 15, High 1).

One token (the project's owner), so ownership is not what refuses: every respelling of a
stored distribution with other bytes is a 409, byte-identical ones are the stored file, and a
deleted distribution comes back only byte for byte (a tombstone).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from index_server.distributions import parse_filename
from tests.factory import make_sdist, make_wheel
from tests.http_helpers import admin_headers, api_files, json_page, project_url, upload, upload_ok

pytestmark = pytest.mark.timeout(60)


def _other(tmp_path: Path, sub: str, name: str, version: str, **kwargs: object) -> Path:
    (tmp_path / sub).mkdir()
    return make_wheel(tmp_path / sub, name, version, modules={"alpha.py": "X = 2\n"}, **kwargs)


def test_identity_ignores_spelling() -> None:
    keys = {
        parse_filename(f).key
        for f in (
            "alpha-1.0-py3-none-any.whl",
            "Alpha-1.0-py3-none-any.whl",
            "ALPHA-1.0.0-py3-none-any.whl",
            "alpha-1-py3-none-any.whl",
        )
    }
    assert len(keys) == 1
    assert parse_filename("Alpha-1.0.tar.gz").key == parse_filename("alpha-1.0.0.zip").key
    # Build tag and tags are part of what pip tells apart.
    assert parse_filename("alpha-1.0-1-py3-none-any.whl").key not in keys
    assert parse_filename("alpha-1.0-py2.py3-none-any.whl").key == (
        parse_filename("alpha-1.0-py3.py2-none-any.whl").key
    )


@pytest.mark.parametrize(
    ("filename", "version"),
    [
        ("Alpha-1.0-py3-none-any.whl", "1.0"),
        ("alpha-1.0.0-py3-none-any.whl", "1.0.0"),
        ("ALPHA-1-py3-none-any.whl", "1"),
    ],
)
def test_respelled_wheel_with_other_bytes_is_409(
    client: FlaskClient, upload_token: str, tmp_path: Path, filename: str, version: str
) -> None:
    original = make_wheel(tmp_path, "alpha", "1.0")
    upload_ok(client, original, upload_token)
    other = _other(tmp_path, "b", "alpha", version)
    renamed = other.with_name(filename)
    other.rename(renamed)
    response = upload(client, renamed, upload_token)
    assert response.status_code == 409, response.get_data(as_text=True)
    assert "already exists with different content" in response.get_data(as_text=True)
    assert [f["filename"] for f in api_files(client, "alpha")] == [original.name]


def test_respelled_identical_bytes_are_the_stored_file(
    client: FlaskClient, upload_token: str, tmp_path: Path
) -> None:
    original = make_wheel(tmp_path, "alpha", "1.0")
    upload_ok(client, original, upload_token)
    (tmp_path / "b").mkdir()
    copy = tmp_path / "b" / "Alpha-1.0-py3-none-any.whl"
    shutil.copyfile(original, copy)
    response = upload(client, copy, upload_token)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["filename"] == original.name
    assert len(api_files(client, "alpha")) == 1


def test_second_sdist_of_a_version_is_409_whatever_its_spelling(
    client: FlaskClient, upload_token: str, tmp_path: Path
) -> None:
    upload_ok(client, make_sdist(tmp_path, "alpha", "1.0"), upload_token)
    for sub, name, version in (("b", "Alpha", "1.0"), ("c", "alpha", "1.0.0")):
        (tmp_path / sub).mkdir()
        other = make_sdist(tmp_path / sub, name, version, files={"extra.py": "X = 1\n"})
        response = upload(client, other, upload_token)
        assert response.status_code == 409, (other.name, response.get_data(as_text=True))
    page = json_page(client, project_url("alpha"))
    assert [f["filename"] for f in page["files"]] == ["alpha-1.0.tar.gz"]


def test_deleted_distribution_comes_back_only_byte_for_byte(
    client: FlaskClient, upload_token: str, tmp_path: Path
) -> None:
    original = make_wheel(tmp_path, "alpha", "1.0")
    upload_ok(client, original, upload_token)
    (stored,) = api_files(client, "alpha")
    response = client.delete(f"/api/files/{stored['id']}", headers=admin_headers())
    assert response.status_code == 200
    other = _other(tmp_path, "b", "alpha", "1.0")
    respelled = tmp_path / "b" / "Alpha-1.0-py3-none-any.whl"
    shutil.copyfile(other, respelled)
    for candidate in (other, respelled):
        refused = upload(client, candidate, upload_token)
        assert refused.status_code == 409, refused.get_data(as_text=True)
        assert "was deleted" in refused.get_data(as_text=True)
    assert api_files(client, "alpha") == []
    again = upload(client, original, upload_token)
    assert again.status_code == 201, again.get_data(as_text=True)


def test_worker_takes_the_canonical_sdist_not_the_first_by_name() -> None:
    """An upstream page may list ``Alpha-1.0.tar.gz`` and ``alpha-1.0.tar.gz``: the worker
    builds the PEP 625 one, though ``A`` sorts before ``a``."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from builder.worker import ServerClient

    page = {
        "files": [
            {"filename": n, "url": f"/f/{n}", "hashes": {"sha256": s * 64}}
            for n, s in (("Alpha-1.0.tar.gz", "a"), ("alpha-1.0.tar.gz", "b"))
        ]
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(page).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = ServerClient(f"http://127.0.0.1:{server.server_port}", "wf_x")
        job = {"project": "alpha", "version": "1.0", "index_path": "/p/simple/"}
        url, sha256, filename = client.find_sdist(job)
    finally:
        server.shutdown()
        server.server_close()
    assert (filename, sha256) == ("alpha-1.0.tar.gz", "b" * 64)
    assert url.endswith("/f/alpha-1.0.tar.gz")
