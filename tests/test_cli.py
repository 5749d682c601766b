import pytest
from typer.testing import CliRunner

from propensity import __version__
from propensity.cli import app

runner = CliRunner()
COMMANDS = ["generate", "aggregate", "train", "score", "monitor", "explain", "daily", "demo",
            "models", "emr"]


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "--config" in result.output or "Commands" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_invalid_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  batch_size: lots\n")
    result = runner.invoke(app, ["aggregate", "--date", "2026-01-01", "--config", str(bad)])
    assert result.exit_code == 2
    assert "training.batch_size" in result.output
