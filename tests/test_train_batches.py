"""Batches from Arrow buffers must equal a slow per-row reference; buckets must cover every row."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
from _training_data import SCHEMA, TS, day_ms, event, histories_table, simulate

from propensity.errors import BadInput
from propensity.model.batches import (
    FeatureSpec,
    encode,
    iter_batches,
    length_buckets,
    prediction_time_ms,
)

DAY = dt.date(2026, 1, 20)


def reference_rows(table: pa.Table, spec: FeatureSpec, as_of: dt.date) -> list[dict]:
    """The obvious per-row Python encoding, the oracle for the vectorised one."""
    out = []
    end = prediction_time_ms(as_of)
    for row in table.to_pylist():
        ts = [int(t.timestamp() * 1000) for t in row["ts"]]
        gaps = [0.0] + [math.log1p(max(b - a, 0) / 3.6e6) for a, b in zip(ts, ts[1:])]

        def bucket(h, n):
            return 0 if h is None else 1 + h % (n - 1)

        out.append(
            {
                "event_type": [
                    spec.types.index(t) if t in spec.types else 0 for t in row["event_type"]
                ],
                "article": [bucket(h, spec.article_buckets) for h in row["article"]],
                "brand": [bucket(h, spec.brand_buckets) for h in row["brand"]],
                "category": [bucket(h, spec.category_buckets) for h in row["category"]],
                "log_gap": gaps,
                "log_price": [math.log1p(p) if p is not None else 0.0 for p in row["price"]],
                "hour": [(t % 86_400_000) / 3.6e6 for t in ts],
                "weekday": [
                    dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc).weekday() for t in ts
                ],
                "since_last": math.log1p((end - ts[-1]) / 3.6e6),
            }
        )
    return out


@pytest.fixture(scope="module")
def table():
    events = simulate(60, DAY - dt.timedelta(days=20), DAY, seed=3)
    # An unknown event type, null hashes and a null price in one hand-made profile.
    events["hand"] = [
        event(day_ms(DAY) + 1000, "teleport", 5, None, -7, None),
        event(day_ms(DAY) + 5000, "order", -(2**63), 3, None, 12.5),
    ]
    return histories_table(events, DAY)


def test_batches_equal_per_row_reference(config, table):
    spec = FeatureSpec.from_config(config)
    expected = reference_rows(table, spec, DAY)
    seen = set()
    for batch in iter_batches(table, spec, DAY, batch_size=16):
        for b, row in enumerate(batch.rows.tolist()):
            seen.add(row)
            ref = expected[row]
            n = int(batch.lengths[b])
            assert n == len(ref["event_type"])
            for name in ["event_type", "article", "brand", "category", "weekday"]:
                got = getattr(batch, name)[b]
                assert got[:n].tolist() == ref[name], name
                assert not got[n:].any(), f"{name} padding must be zero"
            for name in ["log_gap", "log_price", "hour"]:
                got = getattr(batch, name)[b, :n].numpy()
                np.testing.assert_allclose(got, ref[name], rtol=1e-5, atol=1e-5)
            assert batch.context[b, 0].item() == pytest.approx(ref["since_last"], rel=1e-5)
            assert batch.context[b, 1 + (DAY + dt.timedelta(days=1)).weekday()] == 1.0
    assert seen == set(range(table.num_rows))


def test_hand_row_encodings(config, table):
    spec = FeatureSpec.from_config(config)
    row = table.column("profile_id").to_pylist().index("hand")
    batch = encode(table, spec, DAY).batch(np.array([row]))
    assert batch.event_type[0].tolist() == [0, spec.types.index("order")]  # unknown -> other
    assert batch.brand[0, 0] == 0 and batch.category[0, 1] == 0  # null -> bucket 0
    assert 0 < batch.article[0, 1] < spec.article_buckets  # most negative int64 still in range
    assert batch.log_price[0].tolist() == pytest.approx([0.0, math.log1p(12.5)])


def test_batch_pads_only_to_its_longest(config, table):
    enc = encode(table, FeatureSpec.from_config(config), DAY)
    rows = np.argsort(enc.lengths)[:8]
    assert enc.batch(rows).event_type.shape[1] == enc.lengths[rows].max()


def test_length_buckets_cover_rows_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=5000)
    for shuffle in (False, True):
        batches = length_buckets(lengths, 100, shuffle=shuffle, seed=1, window=10)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(5000))
        padded = sum(len(b) * lengths[b].max() for b in batches)
        assert padded < 1.1 * lengths.sum()  # naive padding to 199 would be ~2x
    a = length_buckets(lengths, 100, shuffle=True, seed=1)
    b = length_buckets(lengths, 100, shuffle=True, seed=2)
    assert [x.tolist() for x in a] != [x.tolist() for x in b]


def test_misaligned_lists_are_refused_naming_the_column(config):
    t = pa.table(
        {
            "profile_id": ["a"],
            "n_events": pa.array([1], pa.int32()),
            "first_ts": pa.array([0], SCHEMA.field("first_ts").type),
            "last_ts": pa.array([0], SCHEMA.field("last_ts").type),
            "ts": pa.array([[0]], SCHEMA.field("ts").type),
            "event_type": [["view"]],
            "article": pa.array([[1, 2]], pa.list_(pa.int64())),
            "brand": pa.array([[1]], pa.list_(pa.int64())),
            "category": pa.array([[1]], pa.list_(pa.int64())),
            "price": pa.array([[1.0]], pa.list_(pa.float64())),
        }
    )
    with pytest.raises(BadInput, match="'article'"):
        encode(t, FeatureSpec.from_config(config), DAY, source="histories/dt=x")
    with pytest.raises(BadInput, match="'price' is missing"):
        encode(t.drop(["price"]), FeatureSpec.from_config(config), DAY)


def with_counters(table: pa.Table) -> pa.Table:
    """The first three profiles with hand-made counters: known (with a type outside the
    vocabulary, which counts as other), unknown (a version-1 row), known without orders."""
    t = table.slice(0, 3)
    at = lambda *d: [dt.datetime(2026, 1, x, 12, tzinfo=dt.UTC) for x in d]
    return (
        t.append_column("first_seen", pa.array([at(1)[0], None, at(19)[0]], TS))
        .append_column("counter_types", pa.array([["order", "teleport", "view"], None, ["view"]]))
        .append_column("type_events", pa.array([[3, 2, 40], None, [1]], pa.list_(pa.int32())))
        .append_column("type_days", pa.array([[2, 1, 9], None, [1]], pa.list_(pa.int32())))
        .append_column("type_last_ts", pa.array([at(5, 2, 20), None, at(19)], pa.list_(TS)))
        .append_column("order_value", pa.array([99.5, None, 0.0]))
    )


def counter_reference(row: dict, spec: FeatureSpec, as_of: dt.date) -> list[float]:
    """The counter features of one row, by their definition (batches module docstring)."""
    k = len(spec.types)
    if row["counter_types"] is None:
        return [1.0] + [0.0] * (2 + 3 * k)
    end = prediction_time_ms(as_of) / 1000
    tenure = (end - row["first_seen"].timestamp()) / 86_400
    events, days, since = [0.0] * k, [0.0] * k, [tenure] * k
    for name, n, d, last in zip(
        row["counter_types"], row["type_events"], row["type_days"], row["type_last_ts"]
    ):
        i = spec.types.index(name) if name in spec.types else 0
        events[i] += n
        days[i] = max(days[i], d)
        since[i] = (end - last.timestamp()) / 86_400
    logs = [math.log1p(x) for x in [tenure, row["order_value"], *events, *days, *since]]
    return [0.0, *logs]


def test_counters_enter_the_context_as_their_reference(config, table):
    spec = FeatureSpec.from_config(config)
    t = with_counters(table)
    context = encode(t, spec, DAY).context
    assert context.shape[1] == len(spec.context_features)
    start = spec.context_features.index("counters_unknown")
    for b, row in enumerate(t.to_pylist()):
        np.testing.assert_allclose(
            context[b, start:], counter_reference(row, spec, DAY), rtol=1e-5, atol=1e-6
        )
    # A version-1 snapshot (no counter columns): every row unknown, the same sequence inputs.
    old = encode(table.slice(0, 3), spec, DAY).context
    assert (old[:, start] == 1).all() and not old[:, start + 1 :].any()
    np.testing.assert_array_equal(old[:, :start], context[:, :start])
    # Switched off: the context is the prediction-time features alone.
    off = FeatureSpec(**{**spec.__dict__, "counters": False})
    assert encode(t, off, DAY).context.shape[1] == start


def test_misaligned_counters_are_refused_naming_the_column(config, table):
    t = with_counters(table)
    bad = t.set_column(
        t.schema.get_field_index("type_days"),
        "type_days",
        pa.array([[2, 1], None, [1]], pa.list_(pa.int32())),
    )
    with pytest.raises(BadInput, match="histories/dt=x: counter column 'type_days'"):
        encode(bad, FeatureSpec.from_config(config), DAY, source="histories/dt=x")
