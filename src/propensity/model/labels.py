"""The labels of the targets: which profiles did what a target names within its horizon.

One definition for training (examples from a pair of snapshots) and monitoring (realised quality
once labels have matured), so "validation" and "realised" measure the same thing.

A target holds for a profile when one of its event types occurs in
(end of `as_of`, end of `as_of` + the target's horizon], on an article matching the target's item
predicates (article ids, brands, categories, compared as the hashes the histories store; a
minimum price), read from a later snapshot, so no raw events are re-read. Profiles absent from
the later snapshot get 0 for every target.
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
LABEL_COLUMNS = ["profile_id", "ts", "event_type", *ITEM_COLUMNS]


def labels(inputs: pa.Table, later: pa.Table, cfg: Config, as_of: dt.date) -> np.ndarray:
    """Labels [N, n_targets] (float32 0/1) for the rows of `inputs` (snapshot of `as_of`), from
    the events of the later snapshot `later` in (end of as_of, end of as_of + horizon]."""
    start = prediction_time_ms(as_of)
    ts_col = later.column("ts").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(ts_col), 0).to_numpy().astype(np.int64)
    owner = np.repeat(np.arange(later.num_rows), lengths)  # row of each flat event
    ts = ts_col.flatten().cast(pa.int64()).to_numpy()
    # Row of each input profile in `later` (-1 when absent there).
    where = pc.index_in(inputs.column("profile_id"), value_set=later.column("profile_id"))
    where = pc.fill_null(where, -1).to_numpy()
    types = later.column("event_type").combine_chunks().flatten()
    items = flat_items(later)  # flattened once for every target
    out = np.zeros((inputs.num_rows, len(cfg.targets)), dtype=np.float32)
    for j, target in enumerate(cfg.targets):
        end = start + target.horizon_days * _MS_PER_DAY
        is_type = pc.fill_null(pc.is_in(types, value_set=pa.array(target.event_types)), False)
        hit = is_type.to_numpy(zero_copy_only=False) & ItemPredicate.of(target).matches(items)
        hit &= (ts > start) & (ts <= end)
        positive = np.bincount(owner[hit], minlength=later.num_rows) > 0
        present = where >= 0
        out[present, j] = positive[where[present]]
    return out


def item_matches(table: pa.Table, target: TargetConfig) -> np.ndarray:
    """Per flat event of a histories table: whether its article meets the target's item
    predicates (all True for a target on event types only)."""
    return ItemPredicate.of(target).matches(flat_items(table))
