"""Histories (Arrow) to model inputs: vectorised over Arrow buffers, padded per length bucket.

`encode` turns a histories table into flat per-event numpy arrays once (list offsets + values,
no per-row Python); `EncodedHistories.batch(rows)` gathers any set of rows into a `Batch` padded
only to the longest history among them; `length_buckets` groups rows of similar length so that
padding costs little compute (on 2 CPU cores, bucketed batches train ~5x faster than padding
every history to 200 steps).

Input contract (shared/DESIGN.md, histories): `profile_id`, `n_events`, `first_ts`, `last_ts`,
list columns aligned by position, oldest first: `ts` (timestamp[ms, UTC]), `event_type` (string,
vocabulary or "other"), `article`/`brand`/`category` (int64 hashes, nullable), `price` (float64,
nullable); when present (histories version 2) the counters `COUNTER_INPUT_COLUMNS`. Other
columns (e.g. `event_key`, `older_*`) are ignored.

Encodings (the feature spec recorded with every model):
- event type: index in `cfg.events.types` (0 = other, also for unknown or null values);
- article/brand/category: bucket `1 + hash mod (buckets - 1)`; 0 = null or padding;
- log gap: log1p(hours since the previous event of the profile), 0 for the first event;
- log price: log1p(price), 0 when null;
- hour: fractional hour of day (UTC) of the event; weekday: 0 = Monday;
- item match: per event and per target on items (ItemPredicate in the spec), 1 when the event
  is on an article the target names (its categories, brands, ids, minimum price), else 0;
- context per profile, at the prediction time (end of the snapshot day, UTC): log1p(hours since
  the last event), weekday one-hot of the prediction time. (No day of the year: trained on a few
  weeks, it is a date id, and every later day's scores fell tenfold; docs/score.md.)
- counters per profile (`spec.counters`; the histories' exact counts over the retention window,
  which see what `max_events` cut): `counters_unknown` (1 for a row without counters: a
  version-1 snapshot, its other counter features 0), log1p(days since first seen), log1p(order
  value), and per event type log1p(events), log1p(active days), log1p(days since the last one;
  for a type not seen in the window, the days since first seen: it has not happened since).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from propensity.config import Config
from propensity.errors import BadInput
from propensity.model.items import ITEM_COLUMNS, ItemPredicate

# The list columns the encoder reads: the stored ones (the histories contract) less
# `event_key`, which only dedupes events across days.
ENCODED_LIST_COLUMNS = ["ts", "event_type", "article", "brand", "category", "price"]
# The histories' counter columns the encoder reads when present (absent: "unknown").
COUNTER_INPUT_COLUMNS = [
    "first_seen",
    "counter_types",
    "type_events",
    "type_days",
    "type_last_ts",
    "order_value",
]
CONTEXT_FEATURES = [
    "log_hours_since_last",
    *[f"predict_weekday_{d}" for d in range(7)],
]
# Bump when the model inputs change meaning or shape (2: per-event log age in the model; 3: the
# event-type one-hot and counts per type; no day of the year; 4: the histories' counters in the
# context; 5: item match flags of targets on items), so the registry refuses models encoded the
# old way instead of scoring them wrongly.
FEATURE_SPEC_VERSION = 5
_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class FeatureSpec:
    """How histories are encoded; stored in model.json so scoring encodes exactly like training."""

    types: tuple[str, ...]  # event-type codes: index 0 is "other"
    article_buckets: int
    brand_buckets: int
    category_buckets: int
    # One per target on items, in target order: the events the model flags as matching it.
    items: tuple[ItemPredicate, ...] = ()
    counters: bool = True  # the counter features follow CONTEXT_FEATURES in the context
    version: int = FEATURE_SPEC_VERSION

    @classmethod
    def from_config(cls, cfg: Config) -> FeatureSpec:
        """The spec of a config: its event types and the model's hash bucket counts."""
        m = cfg.model
        return cls(
            types=tuple(cfg.events.types),
            article_buckets=m.article_buckets,
            brand_buckets=m.brand_buckets,
            category_buckets=m.category_buckets,
            items=item_predicates(cfg),
            counters=m.counters,
        )

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """Inverse of `to_dict` (as read from model.json)."""
        items = tuple(ItemPredicate.from_dict(p) for p in d.get("items", ()))
        return cls(**{**d, "types": tuple(d["types"]), "items": items})

    def to_dict(self) -> dict:
        return {**asdict(self), "types": list(self.types)}

    @property
    def context_features(self) -> list[str]:
        """Names of the context columns, in order: CONTEXT_FEATURES, then the counters'."""
        return CONTEXT_FEATURES + (counter_features(self.types) if self.counters else [])


def counter_features(types: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the counter features of a vocabulary (see the module docstring)."""
    return [
        "counters_unknown",
        "log_days_since_first_seen",
        "log_order_value",
        *[f"log_events_{t}" for t in types],
        *[f"log_active_days_{t}" for t in types],
        *[f"log_days_since_{t}" for t in types],
    ]


def item_predicates(cfg: Config) -> tuple[ItemPredicate, ...]:
    """The item predicates of a config's targets on items, in target order."""
    return tuple(ItemPredicate.of(t) for t in cfg.targets if t.on_items)


@dataclass
class Batch:
    """Model inputs for B histories padded to T steps (right-padded: events start at step 0).

    Per-event tensors are [B, T]; positions at or beyond `lengths[b]` are padding (zeros).
    `rows` are the indices of the histories in the source table, to join scores to profile_id.
    """

    event_type: torch.Tensor  # int64 type code (index in FeatureSpec.types)
    article: torch.Tensor  # int64 bucket id, 0 = null/padding
    brand: torch.Tensor  # int64 bucket id, 0 = null/padding
    category: torch.Tensor  # int64 bucket id, 0 = null/padding
    log_gap: torch.Tensor  # float32 log1p(hours since the previous event)
    log_price: torch.Tensor  # float32 log1p(price), 0 when null
    hour: torch.Tensor  # float32 hour of day in [0, 24), UTC
    weekday: torch.Tensor  # int64 0 = Monday
    item_match: torch.Tensor  # float32 [B, T, len(FeatureSpec.items)] 1 = on the target's items
    lengths: torch.Tensor  # int64 [B] number of real events, >= 1
    context: torch.Tensor  # float32 [B, len(spec.context_features)]
    rows: torch.Tensor  # int64 [B] row indices in the encoded table

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch on another device."""
        return Batch(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def prediction_time_ms(as_of: dt.date) -> int:
    """The prediction time of snapshot day D: the end of D (= D+1 00:00 UTC), epoch ms."""
    end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int(end.timestamp() * 1000)


def context_features(last_ts_ms: np.ndarray, as_of: dt.date) -> np.ndarray:
    """Per-profile context [N, len(CONTEXT_FEATURES)] at the end of snapshot day `as_of`."""
    t = prediction_time_ms(as_of)
    hours = np.maximum(t - last_ts_ms, 0) / _MS_PER_HOUR
    out = np.zeros((len(last_ts_ms), len(CONTEXT_FEATURES)), dtype=np.float32)
    out[:, 0] = np.log1p(hours)
    when = as_of + dt.timedelta(days=1)
    out[:, 1 + when.weekday()] = 1.0
    return out


@dataclass
class EncodedHistories:
    """Flat per-event arrays of a histories table (row i's events are offsets[i]:offsets[i+1])."""

    offsets: np.ndarray  # int64 [N + 1]
    event_type: np.ndarray  # int16 [E]
    article: np.ndarray  # int32 [E]
    brand: np.ndarray  # int32 [E]
    category: np.ndarray  # int32 [E]
    log_gap: np.ndarray  # float32 [E]
    log_price: np.ndarray  # float32 [E]
    hour: np.ndarray  # float32 [E]
    weekday: np.ndarray  # int8 [E]
    item_match: np.ndarray  # uint8 [E, len(FeatureSpec.items)]
    context: np.ndarray  # float32 [N, C]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Number of events per row (int64 [N]); rows with none are encoded as one padding step."""
        return np.diff(self.offsets)

    def batch(self, rows: np.ndarray) -> Batch:
        """Gather `rows` into a Batch padded to the longest of them (at least one step)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        width = max(int(lengths.max(initial=0)), 1)
        steps = np.arange(width, dtype=np.int64)
        mask = steps[None, :] < lengths[:, None]
        flat = (self.offsets[rows][:, None] + steps[None, :])[mask]

        def pad(values: np.ndarray, dtype) -> torch.Tensor:
            out = np.zeros((len(rows), width, *values.shape[1:]), dtype=dtype)
            out[mask] = values[flat]
            return torch.from_numpy(out)

        return Batch(
            event_type=pad(self.event_type, np.int64),
            article=pad(self.article, np.int64),
            brand=pad(self.brand, np.int64),
            category=pad(self.category, np.int64),
            log_gap=pad(self.log_gap, np.float32),
            log_price=pad(self.log_price, np.float32),
            hour=pad(self.hour, np.float32),
            weekday=pad(self.weekday, np.int64),
            item_match=pad(self.item_match, np.float32),
            lengths=torch.from_numpy(np.maximum(lengths, 1)),
            context=torch.from_numpy(self.context[rows]),
            rows=torch.from_numpy(rows.copy()),
        )


def _column(table: pa.Table | pa.RecordBatch, name: str, source: str) -> pa.Array:
    if name not in table.schema.names:
        raise BadInput(f"{source}: histories column {name!r} is missing")
    col = table.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _flat_numpy(values: pa.Array, fill: float) -> np.ndarray:
    return pc.fill_null(pc.list_flatten(values), fill).to_numpy(zero_copy_only=False)


def _ms_numpy(values: pa.Array) -> np.ndarray:
    """Timestamps (any unit) as epoch ms, int64; null as 0."""
    ms = pc.cast(values.cast(pa.timestamp("ms", tz="UTC")), pa.int64())
    return pc.fill_null(ms, 0).to_numpy(zero_copy_only=False)


def counter_context(
    table: pa.Table | pa.RecordBatch, spec: FeatureSpec, as_of: dt.date, source: str
) -> np.ndarray:
    """The counter features [N, len(counter_features(spec.types))] at the end of `as_of`.

    A table without the counter columns (a version-1 snapshot) or a row whose counters are
    null is "unknown": the flag 1, every other feature 0. A stored type outside `spec.types`
    counts as `other` (events add up; days and last time take the largest)."""
    n, k = table.num_rows, len(spec.types)
    out = np.zeros((n, 3 + 3 * k), dtype=np.float32)
    if any(c not in table.schema.names for c in COUNTER_INPUT_COLUMNS):
        out[:, 0] = 1.0
        return out
    cols = {c: _column(table, c, source) for c in COUNTER_INPUT_COLUMNS}
    names = cols["counter_types"]
    known = ~names.is_null().to_numpy(zero_copy_only=False)
    width = pc.fill_null(pc.list_value_length(names), 0).to_numpy().astype(np.int64)
    for c in ("type_events", "type_days", "type_last_ts"):
        other = pc.fill_null(pc.list_value_length(cols[c]), 0).to_numpy().astype(np.int64)
        if not np.array_equal(other, width):
            row = int(np.flatnonzero(other != width)[0])
            raise BadInput(
                f"{source}: counter column {c!r} is not aligned with 'counter_types' "
                f"(row {row}: {other[row]} vs {width[row]} values)"
            )
    end = prediction_time_ms(as_of)
    tenure = np.maximum(end - _ms_numpy(cols["first_seen"]), 0) / _MS_PER_DAY
    order_value = pc.fill_null(cols["order_value"], 0.0).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(names).to_numpy(zero_copy_only=False)
    codes = pc.index_in(pc.list_flatten(names), value_set=pa.array(list(spec.types)))
    at = (parents, pc.fill_null(codes, 0).to_numpy().astype(np.int64))
    events, days = np.zeros((n, k)), np.zeros((n, k))
    last = np.full((n, k), -np.inf)
    np.add.at(events, at, _flat_numpy(cols["type_events"], 0))
    np.maximum.at(days, at, _flat_numpy(cols["type_days"], 0))
    np.maximum.at(last, at, _ms_numpy(pc.list_flatten(cols["type_last_ts"])).astype(np.float64))
    since = np.where(np.isfinite(last), np.maximum(end - last, 0) / _MS_PER_DAY, tenure[:, None])
    out[:, 0] = ~known
    out[:, 1] = np.log1p(tenure)
    out[:, 2] = np.log1p(np.maximum(order_value, 0))
    out[:, 3 : 3 + k] = np.log1p(events)
    out[:, 3 + k : 3 + 2 * k] = np.log1p(days)
    out[:, 3 + 2 * k :] = np.log1p(since)
    out[~known, 1:] = 0.0
    return out


def _buckets(values: pa.Array, buckets: int) -> np.ndarray:
    """Hashes to bucket ids 1..buckets-1; null to 0."""
    hashes = pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    out = (1 + np.mod(hashes, buckets - 1)).astype(np.int32)
    if values.null_count:
        out[values.is_null().to_numpy(zero_copy_only=False)] = 0
    return out


def encode(
    table: pa.Table | pa.RecordBatch, spec: FeatureSpec, as_of: dt.date, source: str = "histories"
) -> EncodedHistories:
    """Encode a histories table for prediction at the end of day `as_of` (vectorised).

    Raises BadInput (naming `source` and the column) for a missing column, list columns whose
    lengths disagree within a row, or a null event timestamp. Missing counter columns are not
    an error: they read as unknown (`counter_context`).
    """
    cols = {name: _column(table, name, source) for name in ENCODED_LIST_COLUMNS}
    lengths = pc.fill_null(pc.list_value_length(cols["ts"]), 0).to_numpy().astype(np.int64)
    for name, col in cols.items():
        other = pc.fill_null(pc.list_value_length(col), 0).to_numpy().astype(np.int64)
        if not np.array_equal(other, lengths):
            row = int(np.flatnonzero(other != lengths)[0])
            raise BadInput(
                f"{source}: list column {name!r} is not aligned with 'ts' "
                f"(row {row}: {other[row]} vs {lengths[row]} values)"
            )
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    ts_values = cols["ts"].flatten()
    if ts_values.null_count:
        raise BadInput(f"{source}: column 'ts' holds {ts_values.null_count} null event timestamps")
    ts = ts_values.cast(pa.int64()).to_numpy()
    starts = offsets[:-1][lengths > 0]

    gap_ms = np.diff(ts, prepend=ts[:1]).astype(np.float64)
    gap_ms[starts] = 0.0  # the first event of each profile has no predecessor
    log_gap = np.log1p(np.maximum(gap_ms, 0) / _MS_PER_HOUR).astype(np.float32)

    codes = pc.index_in(cols["event_type"].flatten(), value_set=pa.array(list(spec.types)))
    event_type = pc.fill_null(codes, 0).to_numpy().astype(np.int16)

    price = cols["price"].flatten().cast(pa.float64())
    price_np = pc.fill_null(price, 0.0).to_numpy(zero_copy_only=False)
    log_price = np.log1p(np.maximum(price_np, 0)).astype(np.float32)

    day_ms = np.mod(ts, _MS_PER_DAY)
    hour = (day_ms / _MS_PER_HOUR).astype(np.float32)
    weekday = np.mod(np.floor_divide(ts, _MS_PER_DAY) + 3, 7).astype(np.int8)  # 1970-01-01: Thu

    last_ts = np.zeros(len(lengths), dtype=np.int64)
    has = lengths > 0
    last_ts[has] = ts[offsets[1:][has] - 1]
    last_ts[~has] = prediction_time_ms(as_of)

    flat = {name: cols[name].flatten() for name in ITEM_COLUMNS}
    item_match = np.zeros((len(ts), len(spec.items)), dtype=np.uint8)
    for j, predicate in enumerate(spec.items):
        item_match[:, j] = predicate.matches(flat)

    return EncodedHistories(
        offsets=offsets,
        event_type=event_type,
        article=_buckets(cols["article"].flatten(), spec.article_buckets),
        brand=_buckets(cols["brand"].flatten(), spec.brand_buckets),
        category=_buckets(cols["category"].flatten(), spec.category_buckets),
        log_gap=log_gap,
        log_price=log_price,
        hour=hour,
        weekday=weekday,
        item_match=item_match,
        context=np.concatenate(
            [context_features(last_ts, as_of)]
            + ([counter_context(table, spec, as_of, source)] if spec.counters else []),
            axis=1,
        ),
    )


def length_buckets(
    lengths: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    window: int = 64,
) -> list[np.ndarray]:
    """Row indices per batch, grouped by length so each batch pads little.

    Without shuffle: rows sorted by length (stable), cut into batches (for scoring).
    With shuffle (training): rows permuted by `seed`, sorted by length within windows of
    `window` batches, cut, and the batch order shuffled, so batches differ between epochs
    (different seeds) while each still holds histories of similar length.
    """
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    span = batch_size * window
    out = []
    for start in range(0, n, span):
        chunk = perm[start : start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [out[i] for i in rng.permutation(len(out))]


def iter_batches(
    table: pa.Table | pa.RecordBatch,
    spec: FeatureSpec,
    as_of: dt.date,
    batch_size: int,
    source: str = "histories",
) -> Iterator[Batch]:
    """Length-bucketed batches over a whole table, in deterministic order (for scoring).

    Every row appears exactly once; join results back through `batch.rows`.
    """
    encoded = encode(table, spec, as_of, source=source)
    for rows in length_buckets(encoded.lengths, batch_size):
        yield encoded.batch(rows)
