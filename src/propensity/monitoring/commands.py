"""`propensity monitor` (placeholder until its issue lands)."""

from propensity._not_yet import not_yet
from propensity.cli_options import ConfigOption, DateOption, SetOption


def monitor(date: DateOption, config: ConfigOption = None, sets: SetOption = None) -> None:
    """Check input and score drift, and realised quality once labels have matured."""
    not_yet("monitor", 5)
