"""The baseline every candidate must beat: a logistic regression on hand-made RFM features.

Features per profile at its prediction time (vectorised over Arrow buffers): log history length;
log counts per event type over the whole history and the last 1, 7 and 30 days; log days since
the last event, the last order and the last cart add. Standardised, then one L2-regularised
logistic regression per target (scikit-learn), fit on the training rows of the same examples
and scored on the same validation rows as the candidate, so the gate compares like with like.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from propensity.model.batches import prediction_time_ms
from propensity.training.examples import Examples
from propensity.ui import kv

log = logging.getLogger(__name__)
METHOD = ("logistic regression on log counts per event type (all, last 1/7/30 days), days since "
          "the last event/order/cart add, history length (standardised, L2, C=1)")
WINDOWS_DAYS = (None, 1, 7, 30)  # None: the whole history
RECENCY_OF = (None, "order", "add_to_cart")  # None: any event
NO_EVENT_DAYS = 365.0  # recency of a type never seen
_MS_PER_DAY = 86_400_000


def feature_names(types: list[str]) -> list[str]:
    names = ["log_events"]
    for w in WINDOWS_DAYS:
        names += [f"log_count_{t}_{'all' if w is None else f'{w}d'}" for t in types]
    names += [f"log_days_since_{'event' if t is None else t}" for t in RECENCY_OF]
    return names


def features(table: pa.Table, as_of: dt.date, types: list[str]) -> np.ndarray:
    """The baseline's features [N, len(feature_names(types))] of a histories table."""
    end = prediction_time_ms(as_of)
    lengths = pc.fill_null(pc.list_value_length(table.column("ts")), 0).to_numpy(
        zero_copy_only=False
    )
    owner = np.repeat(np.arange(table.num_rows), lengths)
    ts = pc.list_flatten(table.column("ts")).cast(pa.int64()).to_numpy()
    kind = pc.fill_null(
        pc.index_in(pc.list_flatten(table.column("event_type")), value_set=pa.array(types)), 0
    ).to_numpy()
    age_days = (end - ts) / _MS_PER_DAY
    cols = [np.log1p(lengths)]
    for window in WINDOWS_DAYS:
        keep = np.ones_like(age_days, bool) if window is None else age_days <= window
        counts = np.zeros((table.num_rows, len(types)))
        np.add.at(counts, (owner[keep], kind[keep]), 1)
        cols.extend(np.log1p(counts).T)
    for wanted in RECENCY_OF:
        keep = np.ones_like(age_days, bool)
        if wanted is not None:
            keep = kind == types.index(wanted) if wanted in types else np.zeros_like(keep)
        last = np.full(table.num_rows, NO_EVENT_DAYS)
        np.minimum.at(last, owner[keep], age_days[keep])
        cols.append(np.log1p(np.clip(last, 0, None)))
    return np.column_stack(cols)


def example_features(examples: Examples, types: list[str]) -> np.ndarray:
    """The features of every example row, each pair at its own prediction time."""
    return np.concatenate([features(p.table, p.input_day, types) for p in examples.pairs])


def fit_predict(examples: Examples, types: list[str], rows: np.ndarray,
                seed: int = 0) -> np.ndarray:
    """Fit one regression per target on the training rows; scores [len(rows), n_targets]."""
    t0 = time.perf_counter()
    X = example_features(examples, types)
    y = examples.labels
    out = np.zeros((len(rows), y.shape[1]), dtype=np.float32)
    for j in range(y.shape[1]):
        train_y = y[examples.train_rows, j]
        if train_y.min() == train_y.max():  # one class: the regression is the base rate
            out[:, j] = float(train_y.mean())
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0,
                                                                   random_state=seed))
        model.fit(X[examples.train_rows], train_y)
        out[:, j] = model.predict_proba(X[rows])[:, 1]
    log.info("baseline %s", kv(rows=len(examples.train_rows), features=X.shape[1],
                               seconds=round(time.perf_counter() - t0, 2)))
    return out
