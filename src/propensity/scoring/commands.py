"""`propensity score`: score every profile of histories(D) with the champion model."""

from __future__ import annotations

import logging
from typing import Annotated, Literal, Optional

import typer

from propensity.cli_options import ConfigOption, DateOption, SetOption, load
from propensity.errors import UsageError
from propensity.ui import kv

log = logging.getLogger(__name__)


def score(
    day: DateOption,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", min=1, metavar="N",
                     help="Local worker processes (default: scoring.workers)."),
    ] = None,
    worker_index: Annotated[
        Optional[int],
        typer.Option("--worker-index", min=0, metavar="I",
                     help="Array-job mode: this worker's index (0-based); with --num-workers."),
    ] = None,
    num_workers: Annotated[
        Optional[int],
        typer.Option("--num-workers", min=1, metavar="N",
                     help="Array-job mode: number of workers."),
    ] = None,
    finalize: Annotated[
        bool,
        typer.Option("--finalize",
                     help="Only check that every shard is scored and write manifest + _SUCCESS."),
    ] = False,
    restart: Annotated[
        bool,
        typer.Option("--restart",
                     help="Discard existing (partial or complete) predictions of D first."),
    ] = False,
    rescore: Annotated[
        bool,
        typer.Option("--rescore",
                     help="Replace complete predictions of D with the model chosen now, "
                     "atomically (readers see the old set or the new one, never a mix)."),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="VERSION", show_default=False,
                     help="Score with this version instead of the champion as of D."),
    ] = None,
    engine: Annotated[
        Optional[Literal["local", "spark"]],
        typer.Option("--engine", metavar="local|spark", show_default=False,
                     help="CPU worker processes or a Spark job (default: scoring.engine)."),
    ] = None,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Score every profile of histories(D) with the champion as of D into predictions(D).

    The model: the newest champion trained on or before D (never one that learnt from labels
    after D), or --model VERSION. Writes predictions/dt=D/part-<shard>.parquet (profile_id, one
    probability column per target, model_version), _manifest.json, then _SUCCESS, then moves
    predictions/latest.json. Resumable: a rerun scores only the shards whose file is missing. A
    complete day is kept as it is, also when the model for D has changed since (a warning names
    both versions); --rescore replaces it atomically. Exit codes: 0 done, already complete or
    kept (or a worker whose shards are done while others still run), 3 histories(D) missing,
    no champion as of D (or, with --finalize, shards still missing), 4 malformed histories,
    partial output of another model version (use --restart) or a complete day of rewritten
    histories (use --rescore), 13 another run holds the lease of score/dt=D.

    Example: propensity score --date 2026-01-20 --workers 4
    """
    # Deferred: the scoring job imports torch, so that `propensity --help` stays fast.
    from propensity.scoring.run import score_day

    if workers is not None and (worker_index is not None or num_workers is not None):
        raise UsageError("--workers and --worker-index/--num-workers exclude each other")
    cfg = load(config, sets)
    outcome = score_day(cfg, day, workers=workers, worker_index=worker_index,
                        num_workers=num_workers, finalize_only=finalize, restart=restart,
                        engine=engine, rescore=rescore, model=model)
    if outcome.manifest:
        log.info("score finished %s", kv(date=day, outcome=outcome.action,
                                         rows=outcome.manifest["rows"],
                                         model=outcome.manifest["model"]["version"]))
