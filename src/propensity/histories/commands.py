"""`propensity aggregate` (placeholder until its issue lands)."""

from propensity._not_yet import not_yet
from propensity.cli_options import ConfigOption, DateOption, SetOption, load


def aggregate(date: DateOption, config: ConfigOption = None, sets: SetOption = None) -> None:
    """Merge the day's raw events into the per-profile history snapshot."""
    load(config, sets)
    not_yet("aggregate", 3)
