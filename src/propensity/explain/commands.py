"""`propensity explain` (placeholder until its issue lands)."""

from propensity._not_yet import not_yet
from propensity.cli_options import ConfigOption, DateOption, SetOption


def explain(date: DateOption, config: ConfigOption = None, sets: SetOption = None) -> None:
    """Show which events moved a profile's prediction."""
    not_yet("explain", 7)
