"""`propensity generate`: a synthetic tracking stream with a known truth (docs/generate.md)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Literal

import typer

from propensity.cli_options import ConfigOption, SetOption, load, parse_date
from propensity.errors import UsageError
from propensity.events import behaviour as bm
from propensity.events.generate import Fault, generate_stream
from propensity.ui import console


def generate(
    start: Annotated[
        dt.date,
        typer.Option(
            "--start",
            help="First day.",
            parser=parse_date,
            metavar="YYYY-MM-DD",
            show_default=False,
        ),
    ],
    days: Annotated[
        int,
        typer.Option("--days", metavar="N", help="Number of daily partitions.", show_default=False),
    ],
    profiles: Annotated[
        int,
        typer.Option(
            "--profiles",
            metavar="N",
            help="Profiles in the shop (about 1.4 records per profile and day: 470000 x 30 days = "
            "20M; about --session-events times that).",
            show_default=False,
        ),
    ],
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            metavar="URI",
            help="Output folder or s3:// URI (default: the config's events location).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Random seed: same seed, same bytes.")
    ] = 0,
    fmt: Annotated[
        Literal["jsonl", "parquet"],
        typer.Option("--format", metavar="jsonl|parquet",
                     help="jsonl (gzip JSON lines) or parquet."),
    ] = "jsonl",
    bad_share: Annotated[
        float,
        typer.Option("--bad-share", metavar="SHARE",
                     help="Share of malformed records to inject, in [0, 0.5)."),
    ] = 0.0,
    faults: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            metavar="KIND[:ARG]@YYYY-MM-DD",
            help="Plant a fault from a day on (repeatable): "
            "outage[:TYPE] (the type stops being tracked; default add_to_cart), cents[:FACTOR] "
            "(prices x100), rename[:FIELD] (the field arrives renamed, so null; default price), "
            "order_rate[:FACTOR] (behaviour shift; default 0.25). See docs/generate.md.",
            show_default=False,
        ),
    ] = None,
    session_events: Annotated[
        float,
        typer.Option(
            "--session-events",
            metavar="FACTOR",
            help=f"Multiply the mean events per session ({bm.EVENTS_PER_SESSION.min():g} to "
            f"{bm.EVENTS_PER_SESSION.max():g} by intent state) by FACTOR, in "
            f"({1 / bm.EVENTS_PER_SESSION.min():g}, {bm.SESSION_EVENTS_MAX:g}]: 1 is the planted "
            "stream, byte for byte; 8 a dense stream (grocery baskets, heavy browsing). The "
            "observable oracle assumes the same.",
        ),
    ] = 1.0,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Write a synthetic tracking stream, one partition a day, with its ground truth.

    Writes OUT/dt=YYYY-MM-DD/part-NNNNN.jsonl.gz (or .parquet), then _SUCCESS, per day; and the true order probabilities per profile and day under OUT/_truth/dt=YYYY-MM-DD/ (one column p_<target> per order target of the config, on its categories, brands, articles or minimum price where it names them; then p_<target>_observable), plus OUT/_truth/generator.json. Re-running a day replaces it. Same seed and options give byte-identical files.

    Exit codes: 0 ok, 1 storage failure, 2 bad option or config.

    Example: propensity generate --out data/events --start 2026-01-01 --days 21 --profiles 2000
    """

    cfg = load(config, sets)
    try:
        planted = [Fault.parse(f) for f in faults or []]
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        summary = generate_stream(
            out or cfg.uri("events"),
            start,
            days,
            profiles,
            seed=seed,
            fmt=fmt,
            bad_share=bad_share,
            fields=cfg.events.fields,
            targets=cfg.targets,
            faults=planted,
            session_events=session_events,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None

    for i, d in enumerate(summary.days):
        console.print(
            f"{d}  records {summary.records[i]:>11,}  bad {summary.bad[i]:>8,}  "
            f"truth rows {summary.truth_rows[i]:>9,}",
            highlight=False,
        )
    line = (
        f"total records {summary.total_records:,} (late {summary.late:,}, duplicates "
        f"{summary.duplicates:,}), bad {sum(summary.bad):,}"
    )
    shares = list(summary.order_share_7d.values())
    if shares:  # days with 7 generated days after them
        line += f", 7-day order share {mean(shares):.3f}"
    console.print(line, highlight=False)
    for column, scores in summary.targets.items():
        if scores.truth_auc:  # days with the target's horizon generated after them
            observable = list(scores.observable_auc.values())
            console.print(
                f"{column} ({scores.horizon_days} days): share {mean(scores.share.values()):.3f}, "
                f"truth AUC {mean(scores.truth_auc.values()):.3f}"
                + (f", observable AUC {mean(observable):.3f}" if observable else ""),
                highlight=False,
            )


def mean(values) -> float:
    """The mean of the days' values that are numbers (an AUC is NaN on a day with one class)."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")
