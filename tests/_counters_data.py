"""Histories with window counters for the monitoring tests, without Spark.

A generated stream (the generator's planted shop) goes through the aggregation's per-row oracle
(tests/_histories_data.py, which the Spark job must equal, incremental or full): the snapshots
are version-2 histories tables in the contract's schema, counters and `older_*` included. The
faults below change a snapshot the way a broken upstream or merge would.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _histories_data import oracle, read_raw

from propensity.config import Config
from propensity.events.generate import generate_stream
from propensity.histories.schema import COUNTER_COLUMNS, HISTORY_SCHEMA


def generate(cfg: Config, start: dt.date, days: int, profiles: int, seed: int = 3) -> None:
    """The generator's stream of `days` days from `start` under the config's events/."""
    generate_stream(cfg.uri("events"), start, days, profiles, seed=seed, fields=cfg.events.fields)


def snapshot(cfg: Config, day: dt.date) -> pa.Table:
    """histories(day) as the aggregation defines it, from the raw partitions of its window."""
    window = [day - dt.timedelta(days=i) for i in range(cfg.histories.retention_days)]
    raw = read_raw(cfg, [d for d in sorted(window)])
    rows = oracle(cfg, cfg.pseudonym_key(), raw, day)
    return pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA)


def _replace(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def order_value_scaled(table: pa.Table, factor: float) -> pa.Table:
    """Every profile's order value times `factor` (prices in cents: 100)."""
    return _replace(table, "order_value", pc.multiply(table.column("order_value"), factor))


def counters_unknown(table: pa.Table, share: float, seed: int = 0) -> pa.Table:
    """A random `share` of the rows with every counter and `older_*` column null, as an
    incremental day on a version-1 snapshot writes the profiles descending from it."""
    unknown = pa.array(np.random.default_rng(seed).random(table.num_rows) < share)
    for name in COUNTER_COLUMNS:
        col = table.column(name)
        table = _replace(table, name, pc.if_else(unknown, pa.scalar(None, col.type), col))
    return table


def version_1(table: pa.Table) -> pa.Table:
    """The snapshot as version 1 wrote it: no counter or `older_*` columns."""
    return table.drop_columns(list(COUNTER_COLUMNS))


def tenure_reset(table: pa.Table) -> pa.Table:
    """`first_seen` overwritten with the newest event, as a merge that keeps the day's first
    event instead of the window's would leave every profile seen today for the first time."""
    return _replace(table, "first_seen", table.column("last_ts"))
