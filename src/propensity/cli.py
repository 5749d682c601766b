"""The `propensity` command line: one command per stage of the daily flow.

Each stage owns its commands (`<stage>/commands.py`); this module only assembles them and maps
expected failures to the documented exit codes (see `propensity.errors`).
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Annotated, Callable, Literal

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from propensity import __version__
from propensity.errors import PropensityError, exit_code_of
from propensity.ui import LOG_FORMATS, console, setup_logging


def _verbose_after_command(ctx, param, value: bool) -> None:
    if value:
        logging.getLogger().setLevel(logging.DEBUG)


def _no_type(ctx) -> str:
    return ""


class _Help:
    """What every command's --help and parser share: flags show no value type (typer shows
    `<bool>` for them, though they take no value), positional arguments show their metavar
    (`VERSION`) and no `<str>` beside it, and `-v/--verbose` is accepted after the command as
    well as before it (a copy of the root option that only raises the log level)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        root = ctx.find_root().command
        if root is not self:
            # One copy per command: click matches parameters by identity.
            if getattr(self, "_verbose", None) is None:
                verbose = next(p for p in root.params if p.name == "verbose")
                self._verbose = copy.copy(verbose)
                self._verbose.expose_value = False
                self._verbose.callback = _verbose_after_command
                self._verbose.help = "Debug logging (the same as propensity -v COMMAND)."
            # After the command's own options, before --help (which get_params adds last).
            params = [*self.params, self._verbose, *params[len(self.params) :]]
        for p in params:
            if isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
                p.metavar = ""
            elif isinstance(p, TyperArgument):
                # The name column already says what the value is; typer would add its Python
                # type (`<str>`) in the type column, which tells a user nothing.
                p.metavar = p.metavar or p.name.upper()
                p.display_type_rich = _no_type
        return params


class Command(_Help, TyperCommand):
    pass


class Group(_Help, TyperGroup):
    pass


app = typer.Typer(
    name="propensity",
    help=(
        "Predict what e-commerce consumers will do next from their event histories.\n\n"
        "Daily flow: generate (sample data) -> aggregate -> train -> score -> monitor. "
        "Exit codes: 0 ok, 1 failure, 2 usage/config, 3 missing input, 4 bad input, "
        "10 gate rejected, 11 drift alert, 12 quality alert, 13 another run holds the lease."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=Group,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"propensity {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging (also after the command).")
    ] = False,
    log_format: Annotated[
        Literal[LOG_FORMATS],
        typer.Option(
            "--log-format",
            envvar="PROPENSITY_LOG_FORMAT",
            metavar="|".join(LOG_FORMATS),
            help="Log lines off a terminal: logfmt (key=value) or json (one object a line, "
            "for log collectors).",
        ),
    ] = "logfmt",
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    setup_logging(verbose, log_format)


def handled(fn: Callable) -> Callable:
    """Turn expected failures into a one-line message and their documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PropensityError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(int(exit_code_of(e))) from None

    return wrapper


def _register() -> None:
    # Stage modules import their heavy dependencies (Spark, torch) inside the command bodies,
    # so `propensity --help` stays fast.
    from propensity.cycle import commands as cycle
    from propensity.events import commands as events
    from propensity.explain import commands as explain
    from propensity.histories import commands as histories
    from propensity.monitoring import commands as monitoring
    from propensity.registry import commands as registry
    from propensity.scoring import commands as scoring
    from propensity.training import commands as training

    app.command("generate", cls=Command)(handled(events.generate))
    app.command("aggregate", cls=Command)(handled(histories.aggregate))
    app.command("train", cls=Command)(handled(training.train))
    app.command("score", cls=Command)(handled(scoring.score))
    app.command("monitor", cls=Command)(handled(monitoring.monitor))
    app.command("explain", cls=Command)(handled(explain.explain))
    app.command("daily", cls=Command)(handled(cycle.daily))
    app.command("demo", cls=Command)(handled(cycle.demo))
    for sub in (registry.app, cycle.emr_app):
        for command in sub.registered_commands:
            command.callback = handled(command.callback)
            command.cls = Command
    app.add_typer(registry.app, name="models", cls=Group)
    app.add_typer(cycle.emr_app, name="emr", cls=Group)


_register()


def main() -> None:
    app()
