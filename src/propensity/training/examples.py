"""Training examples for date D from several snapshot pairs.

Pair k (k = 0 .. `training.snapshot_pairs` - 1): inputs from histories(D-H-k), labels from
histories(D-k) (`model.labels`, the definition monitoring shares). More pairs give the model
more cut points of the same profiles and every weekday of prediction time; pair 0 is the
freshest, and the gate compares models on its validation rows only (the question the gate
answers is "which model is better now").

Train/validation split: a keyed hash of profile_id, stable across days and pairs, so a profile
is on the same side in every pair (no validation profile is ever trained on).

A pair whose partitions are missing, or that has too few examples or positives
(`training.min_pair_examples`, `training.min_pair_positives`), is skipped with a logged reason
and counted in model.json; the freshest usable pair is the gate's. With no usable pair the job
fails naming the partitions (exit 3).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa

from propensity import storage
from propensity.config import Config
from propensity.errors import MissingInput
from propensity.model.batches import (
    COUNTER_INPUT_COLUMNS,
    ENCODED_LIST_COLUMNS,
    EncodedHistories,
    FeatureSpec,
    encode,
)
from propensity.model.labels import LABEL_COLUMNS, labels
from propensity.ui import kv

log = logging.getLogger(__name__)
# The counters are read where present (pyarrow skips absent columns: a version-1 snapshot).
INPUT_COLUMNS = [
    "profile_id", "n_events", "first_ts", "last_ts", *ENCODED_LIST_COLUMNS, *COUNTER_INPUT_COLUMNS
]


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
class Pair:
    """One snapshot pair: inputs of `input_day`, labels from `label_day`."""

    k: int
    input_day: dt.date
    label_day: dt.date
    table: pa.Table  # histories(input_day), the rows start..start+len(table) of the examples
    start: int

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.table.num_rows)


@dataclass
class Examples:
    """Encoded inputs, labels and the split of one training date, over its snapshot pairs."""

    day: dt.date  # D: the training date
    pairs: list[Pair]  # usable pairs, freshest first; pairs[0] is the gate's
    encoded: EncodedHistories  # the rows of every pair, concatenated in pair order
    labels: np.ndarray  # float32 [N, n_targets]
    train_rows: np.ndarray  # int64 row indices, every pair
    val_rows: np.ndarray  # int64 row indices, every pair (early stopping, reference statistics)
    gate_rows: np.ndarray  # int64 row indices: the validation rows of pairs[0]
    skipped: list[dict]  # pairs left out, with the reason

    @property
    def input_day(self) -> dt.date:
        """The freshest input snapshot, D - H."""
        return self.pairs[0].input_day

    def pair_of(self, rows: np.ndarray) -> np.ndarray:
        """The pair index of each row."""
        starts = np.array([p.start for p in self.pairs])
        return np.searchsorted(starts, rows, side="right") - 1

    def summary(self) -> dict:
        """Counts and positive rates for model.json and logs."""
        def rate(rows):
            return [round(float(x), 6) for x in self.labels[rows].mean(axis=0)] if len(rows) else []

        return {
            "training_date": self.day.isoformat(),
            "input_date": self.input_day.isoformat(),
            "snapshot_pairs": [
                {"input_date": p.input_day.isoformat(), "label_date": p.label_day.isoformat(),
                 "profiles": p.table.num_rows}
                for p in self.pairs
            ],
            "skipped_pairs": self.skipped,
            "train_examples": int(len(self.train_rows)),
            "validation_examples": int(len(self.val_rows)),
            "gate_examples": int(len(self.gate_rows)),
            "train_positive_rate": rate(self.train_rows),
            "validation_positive_rate": rate(self.val_rows),
            "gate_positive_rate": rate(self.gate_rows),
        }


def concat_encoded(parts: list[EncodedHistories]) -> EncodedHistories:
    """The rows of several encodings as one (offsets shifted, arrays concatenated)."""
    if len(parts) == 1:
        return parts[0]
    shifts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
    offsets = np.concatenate(
        [parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)]
    )
    names = [f.name for f in fields(EncodedHistories) if f.name != "offsets"]
    return EncodedHistories(
        offsets=offsets, **{n: np.concatenate([getattr(p, n) for p in parts]) for n in names}
    )


def _cap(rows: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    if cap is None or len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))


def _read_pair(cfg: Config, k: int, day: dt.date) -> tuple[pa.Table, np.ndarray] | str:
    """(inputs, labels) of pair k, or the reason it cannot be used."""
    histories = cfg.uri("histories")
    label_day = day - dt.timedelta(days=k)
    first = input_day(cfg, label_day)
    in_part, label_part = storage.partition(histories, first), storage.partition(histories, label_day)
    missing = [p for p in (in_part, label_part) if not storage.is_complete(p)]
    if missing:
        return f"missing or incomplete: {', '.join(missing)}"
    table = storage.read_parquet(in_part, columns=INPUT_COLUMNS)
    later = storage.read_parquet(label_part, columns=LABEL_COLUMNS)
    y = labels(table, later, cfg, first)
    t = cfg.training
    if table.num_rows < t.min_pair_examples:
        return f"{table.num_rows} examples < training.min_pair_examples={t.min_pair_examples}"
    positives = int(y.sum(axis=0).min()) if y.size else 0
    if positives < t.min_pair_positives:
        return f"{positives} positives < training.min_pair_positives={t.min_pair_positives}"
    return table, y


def load_examples(cfg: Config, day: dt.date) -> Examples:
    """Read every usable snapshot pair of `day` and build the examples (see module docstring).

    Holds the input partitions as Arrow tables plus their flat encoding; the label partitions are
    reduced to one 0/1 per input row and dropped. `training.max_examples` caps the training and
    validation rows proportionally (seeded sample; the gate's rows are taken from what remains).
    Raises MissingInput (exit 3) when no pair can be used.
    """
    spec = FeatureSpec.from_config(cfg)
    pairs, encodings, ys, skipped, start = [], [], [], [], 0
    for k in range(cfg.training.snapshot_pairs):
        label_day = day - dt.timedelta(days=k)
        got = _read_pair(cfg, k, day)
        if isinstance(got, str):
            skipped.append({"k": k, "label_date": label_day.isoformat(), "reason": got})
            log.info("snapshot pair skipped %s", kv(k=k, label_date=label_day, reason=got))
            continue
        table, y = got
        first = input_day(cfg, label_day)
        source = storage.partition(cfg.uri("histories"), first)
        encodings.append(encode(table, spec, first, source=source))
        pairs.append(Pair(k, first, label_day, table, start))
        ys.append(y)
        start += table.num_rows
    if not pairs:
        reasons = "; ".join(f"labels {s['label_date']}: {s['reason']}" for s in skipped)
        raise MissingInput(f"training for {day}: no usable snapshot pair ({reasons})")
    y = np.concatenate(ys)
    val = np.concatenate([is_validation(p.table.column("profile_id"), cfg) for p in pairs])
    train_rows, val_rows = np.flatnonzero(~val), np.flatnonzero(val)
    cap = cfg.training.max_examples
    if cap is not None:
        n_val = max(1, round(cap * len(val_rows) / max(len(val), 1)))
        train_rows = _cap(train_rows, cap - n_val, cfg.training.seed)
        val_rows = _cap(val_rows, n_val, cfg.training.seed + 1)
    gate_rows = val_rows[val_rows < pairs[0].table.num_rows]
    examples = Examples(day, pairs, concat_encoded(encodings), y, train_rows, val_rows, gate_rows,
                        skipped)
    log.info("examples %s", kv(pairs=len(pairs), skipped=len(skipped),
                               train=len(train_rows), validation=len(val_rows),
                               gate=len(gate_rows)))
    return examples
