"""Options every command shares, and the config loading behind them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Optional

import typer

from propensity.config import Config, load_config
from propensity.storage import as_date


def parse_date(value: str) -> dt.date:
    """A date option's value (YYYY-MM-DD); a bad one is a usage error (exit 2) naming the option."""
    try:
        return as_date(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="YAML config file (default: $PROPENSITY_CONFIG, else the embedded configs/local.yaml).",
        show_default=False,
    ),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override one config value, e.g. --set training.max_epochs=2 (repeatable).",
        show_default=False,
    ),
]
DateOption = Annotated[
    dt.date,
    typer.Option("--date", "-d", help="The day to process.", parser=parse_date,
                 metavar="YYYY-MM-DD", show_default=False),
]


def load(config: Path | None, sets: list[str] | None) -> Config:
    """The config of a command: file (or default) plus environment and --set overrides."""
    return load_config(config, sets)
