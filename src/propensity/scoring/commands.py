"""`propensity score` (placeholder until its issue lands)."""

from propensity._not_yet import not_yet
from propensity.cli_options import ConfigOption, DateOption, SetOption


def score(date: DateOption, config: ConfigOption = None, sets: SetOption = None) -> None:
    """Score every profile of histories(D) with the champion model."""
    not_yet("score", 5)
