"""`propensity demo`: sample data and the whole daily cycle over it, in one local folder.

DIR/config.yaml   a small config (storage under DIR/data) that every command accepts as --config
DIR/data/         events, histories, models, predictions, reports (the same layout as production)

Events start two weeks before the cycle (the shop's past): the cycle's first snapshot is built
from that raw window. The cycle starts on a Monday and the schedule retrains on Mondays: the
first H days only build histories, day H trains the first model (cold, through the gate), day
H+7 retrains it warm from the champion; every day from H on is scored and monitored, and from
2H on the realised AUC of the predictions made H days earlier is checked. Running it again
resumes or does nothing.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from rich.table import Table

from propensity import storage
from propensity.config import Config, load_config
from propensity.cycle import stages
from propensity.cycle.daily import run_range
from propensity.events.generate import generate_stream
from propensity.registry import store
from propensity.ui import console

START = dt.date(2026, 1, 5)  # the cycle's first day, a Monday: the schedule trains on Mondays
PAST_DAYS = 14  # days of events before START: the raw window of the first snapshot
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

model:                           # small: a few thousand training examples
  hidden_size: 32
  article_buckets: 1024
  article_dim: 4
  brand_buckets: 64
  brand_dim: 4
  category_buckets: 64
  category_dim: 4

training:
  max_epochs: 3                  # cold start
  warm_epochs: 2                 # warm start from the champion
  batch_size: 32                 # small batches: enough optimiser steps on little data
  learning_rate: 0.003
  accelerator: cpu
  # One torch thread: the small LSTM gains nothing from more, and OpenMP threads spinning on a
  # busy 2-core machine made a cold epoch 79 s instead of 12 s (docs/cycle.md, Measurements).
  threads: 1
  work_dir: {work}  # resumable checkpoints of an interrupted training

gate:
  min_auc: 0.55                  # two weeks of sample data carry little signal (production: 0.6+)
  max_auc_drop: 0.02

monitoring:
  # A young shop: every history spans one more day than the day before, which the default
  # 0.15 flags from the first week on; production keeps the default.
  ks_threshold: 0.3

schedule:
  train_weekdays: [0]            # Mondays (and whenever there is no champion yet)

spark:
  master: local[2]
  shuffle_partitions: 2
  driver_memory: 1g
  conf:
    spark.ui.showConsoleProgress: "false"   # the cycle prints its own progress
"""


def write_config(directory: Path, days: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    last = START + dt.timedelta(days=days - 1)
    path.write_text(
        CONFIG.format(
            dir=directory, root=(directory / "data").resolve(), last=last,
            work=(directory / "work").resolve(),
        )  # fmt: skip
    )
    return path


def run_demo(
    directory: Path,
    profiles: int = 8000,
    days: int = 16,
    config: Path | None = None,
    sets: list[str] | None = None,
) -> int:
    """Generate events (once) and run the daily cycle over `days` days; returns the exit code.

    The config is DIR/config.yaml, written here, unless `config` names another; `sets` override
    either (`--set training.max_epochs=1`)."""
    # Training's torch threads come from the config (`training.threads: 1` in the demo's).
    return _run(directory, profiles, days, config, sets)


def _run(directory: Path, profiles: int, days: int, config: Path | None, sets: list[str] | None) -> int:
    t0 = time.perf_counter()
    cfg = load_config(config or write_config(directory, days), sets)
    last = START + dt.timedelta(days=days - 1)
    events = cfg.uri("events")
    first = START - dt.timedelta(days=PAST_DAYS)
    if len(storage.list_partitions(events)) < PAST_DAYS + days:
        console.print(
            f"[bold]generating[/] events of {profiles} profiles from {first} to {last} ...",
            highlight=False,
        )
        generate_stream(
            events, first, PAST_DAYS + days, profiles, seed=SEED,
            targets=cfg.targets,
        )  # fmt: skip
    code = run_range(cfg, START, last)
    where(cfg, last)
    outcome = {0: "no alert", 10: "a gate rejection", 11: "a drift alert", 12: "a quality alert"}
    console.print(
        f"demo finished in {time.perf_counter() - t0:.0f} s; the cycle's exit code: {code} "
        f"({outcome.get(code, 'a failure: see above')})",
        highlight=False,
    )
    return code


def where(cfg: Config, last: dt.date) -> None:
    """Print where the demo's outputs are."""
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
