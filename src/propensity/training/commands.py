"""`propensity train` (placeholder until its issue lands)."""

from propensity._not_yet import not_yet
from propensity.cli_options import ConfigOption, DateOption, SetOption


def train(date: DateOption, config: ConfigOption = None, sets: SetOption = None) -> None:
    """Train a candidate model on the newest labelled data and gate it against the champion."""
    not_yet("train", 4)
