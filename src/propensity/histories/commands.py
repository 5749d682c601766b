"""`propensity aggregate`: merge the day's raw events into the per-profile history snapshot."""

from __future__ import annotations

from typing import Annotated

import typer

from propensity.cli_options import ConfigOption, DateOption, SetOption, load
from propensity.errors import UsageError

FullOption = Annotated[
    bool,
    typer.Option(
        "--full",
        help="Rebuild from the raw partitions of the retention window (no D-1 snapshot needed).",
    ),
]
BootstrapOption = Annotated[
    bool,
    typer.Option("--bootstrap", help="Start a new chain: the snapshot of D from D's events alone."),
]


def aggregate(
    day: DateOption,
    full: FullOption = False,
    bootstrap: BootstrapOption = False,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Merge the day's raw events into the per-profile history snapshot.

    Reads events/dt=D (and histories/dt=D-1 unless --full or --bootstrap); writes
    histories/dt=D (Parquet, _summary.json, _SUCCESS) and quarantine/dt=D (bad records with
    their reason). Exit codes: 0 ok, 2 bad option/config, 3 missing or unmarked input
    partition (or D-1 snapshot), 4 too many bad records (nothing written), 13 another run
    holds the lease of aggregate/dt=D (the message names it).

    Example: propensity aggregate --date 2026-01-20
    """
    cfg = load(config, sets)
    if full and bootstrap:
        raise UsageError("--full and --bootstrap exclude each other")
    # Deferred: pyspark, so that `propensity --help` stays fast.
    from propensity.histories.job import print_summary, run
    from propensity.spark import spark_session

    mode = "full" if full else "bootstrap" if bootstrap else "incremental"
    summary = run(spark_session(cfg), cfg, day, mode)
    print_summary(summary)
