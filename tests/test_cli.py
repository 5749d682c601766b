import logging
import shlex

import pytest
import typer
import typer.core
import typer.main
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


def _leaves(command, path=()):
    """(path, click command) of every command that runs something, e.g. ("models", "show")."""
    subs = getattr(command, "commands", None)
    if not subs:
        yield path, command
        return
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


ROOT = typer.main.get_command(app)
LEAVES = dict(_leaves(ROOT))


def _context(path: tuple[str, ...]) -> typer.Context:
    """The context a command's options are parsed in: under its group and the root."""
    ctx = typer.Context(ROOT, info_name="propensity")
    if len(path) == 2:
        ctx = typer.Context(ROOT.commands[path[0]], info_name=path[0], parent=ctx)
    return ctx


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_has_an_example_that_parses(path):
    """The example in each --help is a valid invocation: its options exist and its values convert
    (parsed by the command's own parser, not run)."""
    help_text = LEAVES[path].help or ""
    examples = [line.strip().removeprefix("Example: ") for line in help_text.splitlines()
                if line.strip().startswith("Example: ")]
    assert len(examples) == 1, f"{' '.join(path)}: {examples}"
    words = shlex.split(examples[0])
    assert words[: 1 + len(path)] == ["propensity", *path]
    LEAVES[path].make_context(path[-1], words[1 + len(path):], parent=_context(path))
    result = runner.invoke(app, [*path, "--help"])
    assert "Example: propensity " + " ".join(path) in " ".join(result.output.split())


def _type_column(path) -> dict[str, str]:
    """option -> the value type --help shows for it (empty for flags)."""
    command = LEAVES[path]
    ctx = typer.Context(command, info_name=path[-1], parent=_context(path))
    return {p.opts[0]: p.display_type_rich(ctx) or "" for p in command.get_params(ctx)
            if isinstance(p, typer.core.TyperOption)}


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_help_shows_readable_metavars(path):
    shown = _type_column(path)
    assert not {o: t for o, t in shown.items() if "<" in t}, shown
    assert shown["--help"] == "" and shown["--verbose"] == ""
    if "--config" in shown:
        assert shown["--set"] == "KEY=VALUE"
    if "--date" in shown:
        assert shown["--date"] == "YYYY-MM-DD"


def test_help_names_positional_arguments_without_a_python_type():
    arguments = {}
    for path, command in LEAVES.items():
        ctx = typer.Context(command, info_name=path[-1], parent=_context(path))
        for p in command.get_params(ctx):
            if isinstance(p, typer.core.TyperArgument):
                arguments[(*path, p.name)] = (p.display_name_raw, p.display_type_rich(ctx))
    assert arguments == {("models", "show", "version"): ("VERSION", ""),
                         ("models", "promote", "version"): ("VERSION", "")}
    for path in (("models", "show"), ("models", "promote")):
        shown = runner.invoke(app, [*path, "--help"]).output
        assert "{VERSION}" in shown and "<str>" not in shown, shown


def test_help_lists_the_choices_of_enum_options():
    assert _type_column(("generate",))["--format"] == "jsonl|parquet"
    assert _type_column(("score",))["--engine"] == "local|spark"
    assert _type_column(("daily",))["--only"] == "aggregate|train|score|monitor"
    result = runner.invoke(app, ["score", "--date", "2026-01-20", "--engine", "gpu"])
    assert result.exit_code == 2 and "'gpu' is not one of" in result.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_is_accepted_before_and_after_the_command(where, tmp_path, root_handlers):
    args = ["models", "list", "--set", f"storage.root={tmp_path}"]
    args = ["-v", *args] if where == "before" else [*args, "-v"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == logging.DEBUG
    quiet = runner.invoke(app, ["models", "list", "--set", f"storage.root={tmp_path}"])
    assert quiet.exit_code == 0 and logging.getLogger().level == logging.INFO


def test_a_bad_set_key_blames_the_set_item(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("training:\n  max_epochs: 2\n")
    result = runner.invoke(app, ["aggregate", "--date", "2026-01-01", "--config", str(good),
                                 "--set", "training.batch_size=lots"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "--set training.batch_size=lots: invalid config: training.batch_size" in message
    assert str(good) not in message
