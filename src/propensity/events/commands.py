"""`propensity generate`: a synthetic tracking stream (placeholder until its issue lands)."""

from propensity._not_yet import not_yet
from propensity.cli_options import ConfigOption, SetOption


def generate(config: ConfigOption = None, sets: SetOption = None) -> None:
    """Write a synthetic tracking stream, one partition a day."""
    not_yet("generate", 2)
