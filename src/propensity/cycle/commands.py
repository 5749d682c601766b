"""`propensity daily`, `demo` and `emr` (placeholders until their issue lands)."""

import typer

from propensity._not_yet import not_yet
from propensity.cli_options import ConfigOption, SetOption

emr_app = typer.Typer(help="Run the daily cycle on AWS EMR.", no_args_is_help=True)


def daily(config: ConfigOption = None, sets: SetOption = None) -> None:
    """Run the daily cycle for one day or a range."""
    not_yet("daily", 6)


def demo(config: ConfigOption = None, sets: SetOption = None) -> None:
    """Generate sample data and run the daily cycle over it end to end."""
    not_yet("demo", 6)


@emr_app.command("submit")
def submit(config: ConfigOption = None, sets: SetOption = None) -> None:
    """Add the daily cycle's steps to an EMR cluster."""
    not_yet("emr submit", 6)
