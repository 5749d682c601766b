"""`propensity explain`: which events moved a profile's prediction."""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Annotated, Optional

import typer

from propensity import storage
from propensity.cli_options import ConfigOption, DateOption, SetOption, load
from propensity.errors import UsageError
from propensity.plots import png_bytes
from propensity.ui import kv

log = logging.getLogger(__name__)


def explain(
    day: DateOption,
    profile: Annotated[
        Optional[str],
        typer.Option("--profile", "-p", show_default=False, metavar="ID",
                     help="Raw profile id; pseudonymised with the configured key before lookup "
                          "and never printed."),
    ] = None,
    top: Annotated[
        Optional[int],
        typer.Option("--top", min=1, show_default=False, metavar="N",
                     help="Explain the N highest-scored profiles of predictions(D) instead."),
    ] = None,
    summary: Annotated[
        Optional[int],
        typer.Option("--summary", min=1, show_default=False, metavar="N",
                     help="Global attribution summary over N sampled profiles of histories(D): "
                          "mean |contribution| and mean contribution by event type and recency."),
    ] = None,
    pseudonymised: Annotated[
        bool,
        typer.Option("--pseudonymised",
                     help="--profile is already a pseudonymised id (as in predictions files), or "
                          "a unique prefix of one (as --top prints it; implied by a trailing …)."),
    ] = False,
    target: Annotated[
        Optional[str],
        typer.Option("--target", "-t", show_default=False, metavar="TARGET",
                     help="Target to explain (default: the model's first)."),
    ] = None,
    version: Annotated[
        Optional[str],
        typer.Option("--version", show_default=False, metavar="VERSION",
                     help="Model version (default: the champion; with --top, the version that "
                          "scored predictions(D))."),
    ] = None,
    json_out: Annotated[
        Optional[str],
        typer.Option("--json", show_default=False, metavar="URI",
                     help="Write the explanation as JSON (path or URI)."),
    ] = None,
    html_out: Annotated[
        Optional[str],
        typer.Option("--html", show_default=False, metavar="URI",
                     help="Write an HTML page with plot and table."),
    ] = None,
    png_out: Annotated[
        Optional[str],
        typer.Option("--png", show_default=False, metavar="URI", help="Write the plot as PNG."),
    ] = None,
    steps: Annotated[
        int,
        typer.Option("--steps", min=4, metavar="N",
                     help="Integrated-gradients steps to start from (refined until contributions "
                          "sum to the prediction change)."),
    ] = 64,
    leave_one_out: Annotated[
        bool,
        typer.Option("--leave-one-out/--no-leave-one-out",
                     help="Also compute each event's leave-one-out change."),
    ] = True,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Show which events moved a profile's prediction on date D.

    Prints, for the profile's history in histories(D) and the champion model (or --version), the
    prediction after each event and each event's contribution: integrated gradients on the
    per-event inputs against an all-zero baseline (contributions sum to prediction minus
    f(baseline); the gap is shown), and optionally the leave-one-out change. --json, --html and
    --png write the same explanation for machines and people. Only pseudonymised ids are shown.
    --top N explains the N highest-scored profiles of predictions(D) (explain one of them with
    --pseudonymised --profile and the id prefix it shows); --summary N summarises
    which event types and recencies drive the predictions of N sampled profiles.
    Exit codes: 0 done, 2 bad options or --target, or an id prefix that several ids start with,
    3 histories(D), predictions(D) (--top), the model or the profile missing, 4 malformed
    histories or a tampered model file.

    Example: propensity explain --date 2026-01-20 --top 5 --html top5.html
    """
    from rich.console import Console

    # Deferred: these import torch, so that `propensity --help` stays fast.
    from propensity.attribution import render as summary_render
    from propensity.attribution.summary import global_summary
    from propensity.explain import lookup, render
    from propensity.explain.profile import explain_ids
    from propensity.pseudonym import pseudonymise

    if sum(x is not None for x in (profile, top, summary)) != 1:
        raise UsageError("give exactly one of --profile ID, --top N and --summary N")
    if pseudonymised and profile is None:
        raise UsageError("--pseudonymised goes with --profile")
    cfg = load(config, sets)

    # stdout: the explanation is this command's output; wide when piped, so nothing is cut.
    out = Console(width=None if sys.stdout.isatty() else 160)
    if summary is not None:
        document: dict = global_summary(cfg, day, summary, target, version)
        out.print(summary_render.summary_table(document))
        page = functools.partial(summary_render.summary_page, document)
        figure = functools.partial(summary_render.summary_figure, document)
        count = document["profiles"]
    else:
        if profile is not None and (pseudonymised or profile.endswith(lookup.CUT)):
            ids = [lookup.resolve_prefix(cfg, day, profile)]  # as --top or a predictions file shows it
        elif profile is not None:
            ids = [pseudonymise([profile], cfg.pseudonym_key())[0]]
        else:
            target, best = lookup.top_predictions(cfg, day, target, top)
            versions = sorted({b["model_version"] for b in best})
            if version is None and len(versions) > 1:
                raise UsageError(f"the top {top} of predictions({day}) were scored by model "
                                 f"versions {versions}: pass --version")
            version = version or versions[0]
            ids = [b["profile_id"] for b in best]
        explanations = explain_ids(cfg, day, ids, target, version, steps, leave_one_out)
        if profile is not None:
            document = explanations[0]
            out.print(render.profile_table(document))
        else:
            for e, b in zip(explanations, best):
                e["scored"] = {"score": b["score"], "model_version": b["model_version"]}
            document = {"date": day.isoformat(), "target": target, "model_version": version,
                        "top": top, "profiles": explanations}
            out.print(render.top_table(explanations))
        page = functools.partial(render.html_page, explanations)
        figure = functools.partial(render.figure, explanations)
        count = len(explanations)

    if json_out:
        storage.write_bytes(json_out, json.dumps(document, indent=2).encode())
    if html_out:
        storage.write_bytes(html_out, page().encode())
    if png_out:
        storage.write_bytes(png_out, png_bytes(figure()))
    log.info("explain done %s", kv(date=day, profiles=count, json=json_out,
                                   html=html_out, png=png_out))
