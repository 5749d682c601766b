"""The `propensity` command line: one command per stage of the daily flow.

Each stage owns its commands (`<stage>/commands.py`); this module only assembles them and maps
expected failures to the documented exit codes (see `propensity.errors`).
"""

from __future__ import annotations

import functools
from typing import Annotated, Callable

import typer

from propensity import __version__
from propensity.errors import PropensityError, exit_code_of
from propensity.ui import console, setup_logging

app = typer.Typer(
    name="propensity",
    help=(
        "Predict what e-commerce consumers will do next from their event histories.\n\n"
        "Daily flow: generate (sample data) -> aggregate -> train -> score -> monitor. "
        "Exit codes: 0 ok, 1 failure, 2 usage/config, 3 missing input, 4 bad input, "
        "10 gate rejected, 11 drift alert, 12 quality alert."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"propensity {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    setup_logging(verbose)


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

    app.command("generate")(handled(events.generate))
    app.command("aggregate")(handled(histories.aggregate))
    app.command("train")(handled(training.train))
    app.command("score")(handled(scoring.score))
    app.command("monitor")(handled(monitoring.monitor))
    app.command("explain")(handled(explain.explain))
    app.command("daily")(handled(cycle.daily))
    app.command("demo")(handled(cycle.demo))
    for sub in (registry.app, cycle.emr_app):
        for command in sub.registered_commands:
            command.callback = handled(command.callback)
    app.add_typer(registry.app, name="models")
    app.add_typer(cycle.emr_app, name="emr")


_register()


def main() -> None:
    app()
