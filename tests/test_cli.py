"""The command line: help that answers, schemas export, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from modelog.cli import app
from modelog.models.events import CATALOGUE

runner = CliRunner()

COMMANDS = ["broker", "up", "worker", "project", "dashboard", "demo", "query", "topics",
            "bench", "schemas", "deliver", "alerts", "archive", "monitor"]


def test_root_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
    assert "MODELOG_BROKER" in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_description(name: str) -> None:
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"modelog {name}" in result.output
    # A description beyond the usage line.
    assert len([ln for ln in result.output.splitlines() if ln.strip()]) > 3


def test_console_script_and_module_entry_point_agree() -> None:
    out = subprocess.run([sys.executable, "-m", "modelog", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    assert "modelog up" in out.stdout or "up " in out.stdout


def test_schemas_export_writes_a_valid_schema_per_event(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schemas", "export", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "schemas").glob("*.json"))
    assert {f.stem for f in files} == set(CATALOGUE)
    for f in files:
        jsonschema.Draft202012Validator.check_schema(json.loads(f.read_text()))


def test_installed_package_claims_only_the_modelog_import_root() -> None:
    code = ("import importlib.util as u; "
            "print([n for n in ('streams','models','store','dashboard') if u.find_spec(n)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/", timeout=60)
    assert out.stdout.strip() == "[]"
    import modelog.dashboard
    import modelog.models
    import modelog.store
    import modelog.streams  # noqa: F401


def test_bad_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELOG_PARTITIONS", "many")
    result = runner.invoke(app, ["topics"])
    assert result.exit_code == 1
    assert "MODELOG_PARTITIONS='many' is invalid" in result.output


@pytest.mark.parametrize("args", [
    ["monitor", "configure", "bad name!", "psi_threshold=0.2"],
    ["retrain", "x;rm -rf /"],
    ["registry", "alias", "set", "churn", "a b", "1"],
    ["registry", "alias", "remove", "churn", "../prod"],
    ["traffic", "set", "a b", "production=1"],
    ["policy", "promotion", "set", "../x", "alpha=0.1"],
    ["policy", "retrain", "show", "$(whoami)"],
])
def test_names_are_checked_before_anything_connects(args: list[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELOG_BROKER", "127.0.0.1:1")  # nothing listens: must not be tried
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # unwrap the error box
    assert "is not a name" in text and "letters, digits" in text
    assert "broker" not in text


def test_a_version_below_one_is_refused_before_anything_connects(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELOG_BROKER", "127.0.0.1:1")
    result = runner.invoke(app, ["registry", "promote", "churn", "0"])
    assert result.exit_code == 2 and "greater than or equal to 1" in result.output
