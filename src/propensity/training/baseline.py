"""The baseline every candidate must beat: a logistic regression on hand-made RFM features.

Features per profile at its prediction time (vectorised over Arrow buffers): log history length;
log counts per event type over the whole history and the last 1, 7 and 30 days; log days since
the last event, the last order and the last cart add. For a target on items (categories,
brands, articles, a minimum price) the same counts and recencies again, restricted to the events
on matching items: the hand-made features a shop would build for that target. Standardised,
then one L2-regularised logistic regression per target (scikit-learn), fit on the training rows
of the same examples and scored on the same validation rows as the candidate, so the gate
compares like with like.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from propensity.config import TargetConfig
from propensity.model.batches import prediction_time_ms
from propensity.model.labels import item_matches
from propensity.training.examples import Examples
from propensity.ui import kv

log = logging.getLogger(__name__)
METHOD = ("logistic regression on log counts per event type (all, last 1/7/30 days), days since "
          "the last event/order/cart add, history length, and for a target on items the same "
          "counts and recencies on its matching items (standardised, L2, C=1)")
WINDOWS_DAYS = (None, 1, 7, 30)  # None: the whole history
RECENCY_OF = (None, "order", "add_to_cart")  # None: any event
NO_EVENT_DAYS = 365.0  # recency of a type never seen
_MS_PER_DAY = 86_400_000


def feature_names(types: list[str], target: TargetConfig | None = None) -> list[str]:
    """Names of the features of one target (the shared block, then its item block)."""
    names = _block_names(types, "")
    if target is not None and target.on_items:
        names += _block_names(types, "items_")
    return names


def _block_names(types: list[str], prefix: str) -> list[str]:
    names = [f"log_{prefix}events"]
    for w in WINDOWS_DAYS:
        names += [f"log_{prefix}count_{t}_{'all' if w is None else f'{w}d'}" for t in types]
    names += [f"log_{prefix}days_since_{'event' if t is None else t}" for t in RECENCY_OF]
    return names


def features(table: pa.Table, as_of: dt.date, types: list[str],
             target: TargetConfig | None = None) -> np.ndarray:
    """The baseline's features [N, len(feature_names(types, target))] of a histories table."""
    end = prediction_time_ms(as_of)
    lengths = pc.fill_null(pc.list_value_length(table.column("ts")), 0).to_numpy(
        zero_copy_only=False
    )
    events = _Events(
        owner=np.repeat(np.arange(table.num_rows), lengths),
        age_days=(end - pc.list_flatten(table.column("ts")).cast(pa.int64()).to_numpy())
        / _MS_PER_DAY,
        kind=pc.fill_null(
            pc.index_in(pc.list_flatten(table.column("event_type")), value_set=pa.array(types)),
            0,
        ).to_numpy(),
    )
    cols = _block(events, np.ones(len(events.owner), bool), table.num_rows, types)
    if target is not None and target.on_items:
        cols += _block(events, item_matches(table, target), table.num_rows, types)
    return np.column_stack(cols)


@dataclass
class _Events:
    """The flat events of a histories table: owning row, age at the prediction time, type code."""

    owner: np.ndarray
    age_days: np.ndarray
    kind: np.ndarray


def _block(ev: _Events, selected: np.ndarray, n_rows: int, types: list[str]) -> list[np.ndarray]:
    """Count, window and recency features over the selected events."""
    cols = [np.log1p(np.bincount(ev.owner[selected], minlength=n_rows))]
    for window in WINDOWS_DAYS:
        keep = selected if window is None else selected & (ev.age_days <= window)
        counts = np.zeros((n_rows, len(types)))
        np.add.at(counts, (ev.owner[keep], ev.kind[keep]), 1)
        cols.extend(np.log1p(counts).T)
    for wanted in RECENCY_OF:
        keep = selected.copy()
        if wanted is not None:
            keep &= ev.kind == types.index(wanted) if wanted in types else False
        last = np.full(n_rows, NO_EVENT_DAYS)
        np.minimum.at(last, ev.owner[keep], ev.age_days[keep])
        cols.append(np.log1p(np.clip(last, 0, None)))
    return cols


def example_features(examples: Examples, types: list[str],
                     target: TargetConfig | None = None) -> np.ndarray:
    """The features of every example row for one target, each pair at its own prediction time."""
    return np.concatenate([features(p.table, p.input_day, types, target) for p in examples.pairs])


def fit_predict(examples: Examples, types: list[str], targets: list[TargetConfig],
                rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """Fit one regression per target on the training rows; scores [len(rows), n_targets]."""
    t0 = time.perf_counter()
    y = examples.labels
    out = np.zeros((len(rows), y.shape[1]), dtype=np.float32)
    shared = None  # the features of targets on event types only are the same: built once
    for j, target in enumerate(targets):
        train_y = y[examples.train_rows, j]
        if train_y.min() == train_y.max():  # one class: the regression is the base rate
            out[:, j] = float(train_y.mean())
            continue
        if target.on_items:
            X = example_features(examples, types, target)
        else:
            shared = example_features(examples, types) if shared is None else shared
            X = shared
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0,
                                                                   random_state=seed))
        model.fit(X[examples.train_rows], train_y)
        out[:, j] = model.predict_proba(X[rows])[:, 1]
    log.info("baseline %s", kv(rows=len(examples.train_rows), targets=len(targets),
                               seconds=round(time.perf_counter() - t0, 2)))
    return out
