"""The labels of the targets: which profiles did what a target names within its horizon.

One definition for training (examples from a pair of snapshots) and monitoring (realised quality
once labels have matured), so "validation" and "realised" measure the same thing.

A target holds for a profile when one of its event types occurs in
(end of `as_of`, end of `as_of` + the target's horizon], on an article matching the target's item
predicates (article ids, brands, categories, compared as the hashes the histories store; a
minimum price), read from a later snapshot, so no raw events are re-read. Profiles absent from
the later snapshot get 0 for every target.

A target on event types (and at most a minimum price) also reads the snapshot's `older_*`
events: those `histories.max_events` cut from the lists (histories version 2). So its labels do
not depend on the cap: a heavy visitor's order is a positive however many views followed it.
`older_*` keeps no article, brand or category, so a target on those reads the lists only and
can lose a target event that was cut (docs/train.md, "Examples and labels").
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config import Config, TargetConfig
from propensity.model.batches import prediction_time_ms
from propensity.model.items import ITEM_COLUMNS, ItemPredicate, flat_items

_MS_PER_DAY = 86_400_000
# The history columns the labels read from the later snapshot.
# The cut events' columns (absent from a version-1 snapshot: pyarrow then skips them).
OLDER_COLUMNS = ["older_ts", "older_event_type", "older_price"]
LABEL_COLUMNS = ["profile_id", "ts", "event_type", *ITEM_COLUMNS, *OLDER_COLUMNS]


def _flat(table: pa.Table, column: str) -> pa.Array:
    return table.column(column).combine_chunks().flatten()


def _owners(table: pa.Table, column: str) -> np.ndarray:
    """The row of each flat value of a list column."""
    lengths = pc.fill_null(pc.list_value_length(table.column(column).combine_chunks()), 0)
    return np.repeat(np.arange(table.num_rows), lengths.to_numpy().astype(np.int64))


def _hits(types: pa.Array, ts: np.ndarray, target: TargetConfig, start: int, end: int,
          on_items: np.ndarray | bool) -> np.ndarray:
    """Per flat event: one of the target's types, inside (start, end], meeting `on_items`."""
    is_type = pc.fill_null(pc.is_in(types, value_set=pa.array(target.event_types)), False)
    return is_type.to_numpy(zero_copy_only=False) & on_items & (ts > start) & (ts <= end)


def labels(inputs: pa.Table, later: pa.Table, cfg: Config, as_of: dt.date) -> np.ndarray:
    """Labels [N, n_targets] (float32 0/1) for the rows of `inputs` (snapshot of `as_of`), from
    the events of the later snapshot `later` in (end of as_of, end of as_of + horizon]."""
    start = prediction_time_ms(as_of)
    owner = _owners(later, "ts")
    ts = _flat(later, "ts").cast(pa.int64()).to_numpy()
    # Row of each input profile in `later` (-1 when absent there).
    where = pc.index_in(inputs.column("profile_id"), value_set=later.column("profile_id"))
    where = pc.fill_null(where, -1).to_numpy()
    present = where >= 0
    types = _flat(later, "event_type")
    items = flat_items(later)  # flattened once for every target
    older = "older_ts" in later.column_names
    if older:
        old_owner = _owners(later, "older_ts")
        old_ts = pc.fill_null(_flat(later, "older_ts").cast(pa.int64()), 0).to_numpy()
        old_types = _flat(later, "older_event_type")
        old_items = {"price": _flat(later, "older_price")}  # all a predicate not on ids reads
    out = np.zeros((inputs.num_rows, len(cfg.targets)), dtype=np.float32)
    for j, target in enumerate(cfg.targets):
        end = start + target.horizon_days * _MS_PER_DAY
        predicate = ItemPredicate.of(target)
        hit = _hits(types, ts, target, start, end, predicate.matches(items))
        positive = np.bincount(owner[hit], minlength=later.num_rows) > 0
        if older and not predicate.on_ids:
            old = _hits(old_types, old_ts, target, start, end, predicate.matches(old_items))
            positive |= np.bincount(old_owner[old], minlength=later.num_rows) > 0
        out[present, j] = positive[where[present]]
    return out


def item_matches(table: pa.Table, target: TargetConfig) -> np.ndarray:
    """Per flat event of a histories table: whether its article meets the target's item
    predicates (all True for a target on event types only)."""
    return ItemPredicate.of(target).matches(flat_items(table))
