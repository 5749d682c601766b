"""`propensity demo`: sample data and the whole daily cycle over it, in one local folder.

DIR/config.yaml   a small config (storage under DIR/data) that every command accepts as --config
DIR/data/         events, histories, models, predictions, reports (the same layout as production)

The range starts on a Monday and the schedule retrains on Mondays: the first H days only build
histories, day H trains the first model (cold, through the gate), day H+7 retrains it warm from
the champion; every day from H on is scored and monitored, and from 2H on the realised AUC of
the predictions made H days earlier is checked. Running it again resumes or does nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from propensity import storage
from propensity.config import load_config
from propensity.cycle import stages
from propensity.cycle.daily import run_range
from propensity.ui import console

START = dt.date(2026, 1, 5)  # a Monday: the schedule below trains on Mondays
SEED = 7

CONFIG = """\
# The demo's config, written by `propensity demo`. Use it with any command, e.g.
#   propensity models list --config {dir}/config.yaml
#   propensity daily --date {last} --force --config {dir}/config.yaml
storage:
  root: {root}

privacy:
  # DEVELOPMENT KEY, public: it protects nothing (demo data only).
  dev_key: propensity-local-development-key-NOT-SECRET

model:
  hidden_size: 32                # small: trains in seconds on 2 cores

training:
  max_epochs: {epochs}           # cold start
  warm_epochs: {warm_epochs}     # warm start from the champion
  batch_size: 256
  accelerator: cpu

schedule:
  train_weekdays: [0]            # Mondays (and whenever there is no champion yet)

spark:
  master: local[2]
  shuffle_partitions: 2
  driver_memory: 1g
  conf:
    spark.ui.showConsoleProgress: "false"   # the cycle prints its own progress
"""


def write_config(directory: Path, days: int, epochs: int = 4, warm_epochs: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    last = START + dt.timedelta(days=days - 1)
    path.write_text(
        CONFIG.format(
            dir=directory, root=(directory / "data").resolve(), last=last,
            epochs=epochs, warm_epochs=warm_epochs,
        )  # fmt: skip
    )
    return path


def run_demo(directory: Path, profiles: int = 8000, days: int = 21, epochs: int = 4) -> int:
    """Generate events (once) and run the daily cycle over every day; returns the exit code."""
    from propensity.events.generate import generate_stream

    t0 = time.perf_counter()
    cfg = load_config(write_config(directory, days, epochs=epochs))
    last = START + dt.timedelta(days=days - 1)
    events = cfg.uri("events")
    if len(storage.list_partitions(events)) < days:
        console.print(f"[bold]generating[/] {days} days of events for {profiles} profiles ...")
        generate_stream(
            events, START, days, profiles, seed=SEED,
            horizons={f"p_{t.name}": t.horizon_days for t in cfg.targets},
        )  # fmt: skip
    code = run_range(cfg, START, last)
    where(cfg, last)
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s (exit {code})", highlight=False)
    return code


def where(cfg, last: dt.date) -> None:
    """Print where the demo's outputs are."""
    from rich.table import Table

    from propensity.registry import store

    table = Table(title="where the outputs are", show_header=False)
    predictions = storage.list_partitions(cfg.uri("predictions"))
    reports = storage.list_partitions(cfg.uri("reports"))
    table.add_row("events", cfg.uri("events"))
    table.add_row("histories", cfg.uri("histories"))
    if predictions:
        table.add_row("predictions", f"{storage.partition(cfg.uri('predictions'), predictions[-1])}/")
    table.add_row("models", f"{store.root(cfg)}/  (champion {stages.champion(cfg) or 'none'})")
    if reports:
        table.add_row("HTML report", stages.report_html(cfg, reports[-1]))
    table.add_row("run records", storage.join(cfg.uri("reports"), "runs") + "/")
    table.add_row("config", cfg.source)
    console.print(table)
