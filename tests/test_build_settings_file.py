"""Per-project build settings from a TOML file, at server start and from the CLI."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from client.cli import main
from index_server import jobs
from index_server.build_settings_file import SettingsFileError, read_settings_file
from index_server.services import Services
from tests.conftest import start_server, stop_server

GOOD = """\
[PyYAML]
constraints = "cython<3\\n"
os_packages = ["libyaml-dev"]

[lxml]
env = { CFLAGS = "-O2" }
"""


def test_file_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(GOOD)
    assert read_settings_file(path)["pyyaml"] == {
        "constraints": "cython<3\n",
        "os_packages": ["libyaml-dev"],
    }
    path.write_text('[x]\nos_packages = ["Not A Package"]\n')
    with pytest.raises(SettingsFileError, match=r"\[x\] os_packages/0"):
        read_settings_file(path)
    path.write_text("[x\n")
    with pytest.raises(SettingsFileError, match=r"settings\.toml"):
        read_settings_file(path)


def test_cli_applies_the_file(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(GOOD)
    result = CliRunner().invoke(
        main, ["--data-dir", str(services.settings.data_dir), "build-settings", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert "lxml, pyyaml" in result.output
    assert jobs.get_project_settings(services, "lxml") == {"env": {"CFLAGS": "-O2"}}


def test_server_applies_the_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(GOOD)
    server = start_server(
        tmp_path / "data", tmp_path / "log", WHEELFARM_BUILD_SETTINGS_FILE=str(path)
    )
    try:
        with urllib.request.urlopen(server.url + "/api/build-settings/pyyaml") as response:
            shown = json.load(response)
    finally:
        stop_server(server)
    assert shown["settings"]["constraints"] == "cython<3\n"
