"""`propensity train --date D [--cold]`: train a candidate, gate it, publish it to the registry."""

from __future__ import annotations

from typing import Annotated

import typer

from propensity.cli_options import ConfigOption, DateOption, SetOption, load


def train(
    date: DateOption,
    cold: Annotated[
        bool,
        typer.Option(
            "--cold",
            help="Train from scratch instead of warm-starting from the champion "
            "(required when the champion's architecture differs from the config).",
        ),
    ] = False,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Train a candidate model on the newest labelled data and gate it against the champion.

    Inputs: histories(D-H) and, for labels, histories(D) (H = longest target horizon).
    Output: a new version in models/<name>/; the champion pointer moves only if the gate approves.
    A killed run resumes from its local checkpoint when re-run with the same options.
    Exit codes: 0 approved, 2 bad option/config or warm start impossible without --cold,
    3 missing histories partition, 4 malformed histories or tampered champion weights,
    10 gate rejected (version kept, champion unchanged), 13 another run holds the lease of
    train/dt=D.

    Example: propensity train --date 2026-01-20 --set training.max_epochs=5
    """
    from propensity.training.run import train as run_train

    run_train(load(config, sets), date, cold=cold)
