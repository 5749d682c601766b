"""Training examples for date D: inputs from histories(D-H), labels from histories(D).

Labels: `model.labels` (the definition monitoring shares).
Train/validation split: a keyed hash of profile_id (stable across days, so a profile never
switches sides as its history grows).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from propensity import storage
from propensity.config import Config
from propensity.model.batches import ENCODED_LIST_COLUMNS, EncodedHistories, FeatureSpec, encode
from propensity.model.labels import labels
from propensity.ui import kv

log = logging.getLogger(__name__)
INPUT_COLUMNS = ["profile_id", "n_events", "first_ts", "last_ts", *ENCODED_LIST_COLUMNS]


def input_day(cfg: Config, day: dt.date) -> dt.date:
    """The snapshot whose labels have matured by `day`: D - H."""
    return day - dt.timedelta(days=cfg.horizon_days)


def split_hash(profile_ids: pa.Array | pa.ChunkedArray, salt: str) -> np.ndarray:
    """Keyed hash of each profile id as a uniform number in [0, 1) (stable across days)."""
    key = hashlib.sha256(salt.encode()).digest()
    out = np.empty(len(profile_ids), dtype=np.float64)
    for i, pid in enumerate(profile_ids.to_pylist()):
        digest = hashlib.blake2b(pid.encode(), key=key, digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def is_validation(profile_ids, cfg: Config) -> np.ndarray:
    """Validation membership by keyed hash: True for about `validation_share` of profiles."""
    return split_hash(profile_ids, cfg.training.split_salt) < cfg.training.validation_share


@dataclass
class Examples:
    """Encoded inputs, labels and the split of one training date."""

    day: dt.date  # D: the training date (labels mature on it)
    input_day: dt.date  # D - H: the snapshot the inputs come from
    table: pa.Table  # histories(D-H), the rows of `encoded`
    encoded: EncodedHistories
    labels: np.ndarray  # float32 [N, n_targets]
    train_rows: np.ndarray  # int64 row indices
    val_rows: np.ndarray  # int64 row indices

    def summary(self) -> dict:
        """Counts and positive rates for model.json and logs."""
        def rate(rows):
            return [round(float(x), 6) for x in self.labels[rows].mean(axis=0)] if len(rows) else []

        return {
            "training_date": self.day.isoformat(),
            "input_date": self.input_day.isoformat(),
            "train_examples": int(len(self.train_rows)),
            "validation_examples": int(len(self.val_rows)),
            "train_positive_rate": rate(self.train_rows),
            "validation_positive_rate": rate(self.val_rows),
        }


def _cap(rows: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    if cap is None or len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))


def load_examples(cfg: Config, day: dt.date) -> Examples:
    """Read histories(D-H) and histories(D) (both must be complete) and build the examples.

    Holds the input partition as an Arrow table plus its flat encoding; the label partition is
    reduced to one 0/1 per input row and dropped. `training.max_examples` caps the training and
    validation rows proportionally (seeded sample).
    """
    first = input_day(cfg, day)
    histories = cfg.uri("histories")
    in_part, label_part = storage.partition(histories, first), storage.partition(histories, day)
    table = storage.read_parquet(in_part, columns=INPUT_COLUMNS)
    later = storage.read_parquet(label_part, columns=["profile_id", "ts", "event_type"])
    y = labels(table, later, cfg, first)
    del later
    encoded = encode(table, FeatureSpec.from_config(cfg), first, source=in_part)
    val = is_validation(table.column("profile_id"), cfg)
    train_rows, val_rows = np.flatnonzero(~val), np.flatnonzero(val)
    cap = cfg.training.max_examples
    if cap is not None:
        n_val = max(1, round(cap * len(val_rows) / max(table.num_rows, 1)))
        train_rows = _cap(train_rows, cap - n_val, cfg.training.seed)
        val_rows = _cap(val_rows, n_val, cfg.training.seed + 1)
    examples = Examples(day, first, table, encoded, y, train_rows, val_rows)
    log.info("examples %s", kv(inputs=in_part, labels=label_part, **examples.summary()))
    return examples
