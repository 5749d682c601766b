"""`propensity daily`, `propensity demo` and `propensity emr submit`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from propensity.cli_options import ConfigOption, DateOption, SetOption, load, parse_date
from propensity.cycle import emr
from propensity.cycle.daily import ALERT_ORDER, STEPS, run_range
from propensity.cycle.demo import run_demo
from propensity.errors import ExitCode, UsageError
from propensity.ui import console

emr_app = typer.Typer(help="Run the daily cycle on AWS EMR.", no_args_is_help=True)



def daily(
    day: Annotated[
        Optional[dt.date],
        typer.Option("--date", "-d", help="The day to run.", parser=parse_date,
                     metavar="YYYY-MM-DD"),
    ] = None,
    first: Annotated[
        Optional[dt.date],
        typer.Option("--from", help="First day of a backfill.", parser=parse_date,
                     metavar="YYYY-MM-DD"),
    ] = None,
    last: Annotated[
        Optional[dt.date],
        typer.Option("--to", help="Last day of a backfill (inclusive).", parser=parse_date,
                     metavar="YYYY-MM-DD"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo steps whose output is already complete.")
    ] = False,
    rescore: Annotated[
        bool,
        typer.Option("--rescore", help="The score step replaces complete predictions with the "
                     "model chosen now, atomically (as `propensity score --rescore`)."),
    ] = False,
    only: Annotated[
        Optional[list[str]],
        typer.Option("--only", metavar="|".join(STEPS), show_default=False,
                     help="Run only this step (repeatable)."),
    ] = None,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Run the daily cycle: aggregate -> train (when scheduled) -> score -> monitor.

    Each step skips itself when its output partition is already complete, so a failed day is
    simply run again and resumes where it stopped. Complete predictions are kept, also after a
    model change (named in the score step's detail), unless --rescore or --force. Prints a summary and writes a run record to
    <reports>/runs/<date>-<UTC time>.json.

    Exit codes: 0 success; 10 gate rejected (scored with the old champion); 11 drift alert;
    12 quality alert; 1/3/4 a step failed (its own code); 13 another daily run holds the day
    (or a step's lease). A range stops at the first failure.

    Example: propensity daily --from 2026-01-06 --to 2026-01-20 --only aggregate --only score
    """
    if day and (first or last):
        raise UsageError("give either --date D or --from D1 --to D2, not both")
    if day:
        first = last = day
    if not (first and last):
        raise UsageError("give --date D, or --from D1 --to D2")
    if last < first:
        raise UsageError(f"--to {last} is before --from {first}")
    steps = tuple(only or STEPS)
    # Checked here: typer cannot declare a list of choices.
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise UsageError(f"--only: unknown step(s) {unknown}; steps are {list(STEPS)}")
    code = run_range(load(config, sets), first, last, force=force, only=steps, rescore=rescore)
    if code != ExitCode.OK:
        raise typer.Exit(int(code))


def demo(
    directory: Annotated[
        Path,
        typer.Option("--dir", metavar="PATH",
                     help="Folder for the demo's config and data (created)."),
    ] = Path("demo"),
    profiles: Annotated[
        int, typer.Option("--profiles", metavar="N", help="Generated profiles.", min=100)
    ] = 8000,
    days: Annotated[
        int,
        typer.Option("--days", metavar="N", min=8,
                     help="Days of the daily cycle (after 14 days of past events)."),
    ] = 16,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", metavar="PATH", show_default=False,
                     help="Use this config instead of writing DIR/config.yaml."),
    ] = None,
    sets: SetOption = None,
) -> None:
    """Generate sample data and run the daily cycle over it end to end (a few minutes).

    Writes DIR/config.yaml (storage under DIR/data), generates events (two weeks of past, then
    the cycle's days from 2026-01-05), runs `propensity daily --from --to` over the cycle's days
    (first snapshot from the raw window, a cold model through the gate, a warm-started retrain a
    week later, scoring, monitoring, realised AUC) and prints where the outputs are.

    Exit 0 when every day ran (alerts such as a rejected candidate are part of the story),
    else the failed day's code.

    Example: propensity demo --dir demo --profiles 2000 --days 10
    """
    code = run_demo(directory, profiles=profiles, days=days, config=config, sets=sets)
    if code not in (ExitCode.OK, *ALERT_ORDER):
        raise typer.Exit(int(code))


@emr_app.command("submit")
def submit(
    cluster_id: Annotated[
        str,
        typer.Option("--cluster-id", metavar="ID", show_default=False,
                     help="The running EMR cluster (j-...)."),
    ],
    day: DateOption,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the steps and exit with their outcome.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo complete steps.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the step definitions (JSON) and submit nothing.")
    ] = False,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Add the daily cycle's steps (aggregate, train, score, monitor) to an EMR cluster.

    Without --wait it prints the step ids and returns. With --wait it polls until every step
    has ended and exits like `propensity daily`: 0 all completed; for a failed step, the code in
    its run record (<reports>/runs/<D>-*.json: 10 gate rejected, 11 drift, 12 quality, or the
    failure's code), else 1.

    Example: propensity emr submit --cluster-id j-2AXXXXXXGAPLF --date 2026-01-20 --wait
    """
    cfg = load(config, sets)
    steps = emr.build_steps(day.isoformat(), train_image=cfg.schedule.emr.train_image, force=force)
    if dry_run:
        typer.echo(json.dumps(steps, indent=2))
        return
    client = emr.emr_client()
    ids = emr.submit(client, cluster_id, steps)
    for sid, step in zip(ids, steps):
        typer.echo(f"{sid}\t{step['Name']}")
    if not wait:
        return
    final = emr.wait(
        client,
        cluster_id,
        ids,
        poll_seconds=cfg.schedule.emr.poll_seconds,
        timeout_s=cfg.schedule.emr.timeout_minutes * 60,
    )
    from rich.table import Table

    table = Table(title=f"EMR steps on {cluster_id} for {day}")
    for col in ("step", "id", "state", "reason"):
        table.add_column(col)
    for s in final:
        style = "green" if s.state == "COMPLETED" else "red"
        table.add_row(s.name, s.id, f"[{style}]{s.state}[/]", s.reason)
    console.print(table)
    code = emr.exit_code(cfg, day, final)
    if code:
        bad = ", ".join(f"{s.name} {s.state}" for s in final if s.state != "COMPLETED")
        console.print(f"[bold red]exit {code}:[/] {bad} (run records: <reports>/runs/{day}-*.json)")
        raise typer.Exit(code)
