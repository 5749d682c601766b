"""`propensity models ...` (placeholder until its issue lands)."""

import typer

from propensity._not_yet import not_yet
from propensity.cli_options import ConfigOption, SetOption

app = typer.Typer(help="List, inspect, promote and roll back model versions.", no_args_is_help=True)


@app.command("list")
def list_versions(config: ConfigOption = None, sets: SetOption = None) -> None:
    """List model versions with dates, metrics and gate decisions."""
    not_yet("models list", 4)
