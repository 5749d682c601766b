"""The histories' counters as model inputs: attributions and monitoring statistics."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import torch
from _training_data import TS, histories_table, simulate

from propensity.attribution.integrated_gradients import IG_TOLERANCE, counter_attributions
from propensity.model import stats
from propensity.model.batches import COUNTER_INPUT_COLUMNS, FeatureSpec, encode
from propensity.model.network import PropensityModel

DAY = dt.date(2026, 1, 20)


def with_counters(table: pa.Table) -> pa.Table:
    """The table with counters computed from its own lists (its window is the lists)."""
    rows = table.to_pylist()
    cols: dict[str, list] = {c: [] for c in COUNTER_INPUT_COLUMNS}
    for r in rows:
        types = sorted(set(r["event_type"]))
        of = {t: [ts for ts, e in zip(r["ts"], r["event_type"]) if e == t] for t in types}
        cols["first_seen"].append(r["ts"][0])
        cols["counter_types"].append(types)
        cols["type_events"].append([len(of[t]) for t in types])
        cols["type_days"].append([len({ts.date() for ts in of[t]}) for t in types])
        cols["type_last_ts"].append([max(of[t]) for t in types])
        prices = [p or 0.0 for p, e in zip(r["price"], r["event_type"]) if e == "order"]
        cols["order_value"].append(sum(prices, 0.0))
    types = {
        "first_seen": TS,
        "counter_types": pa.list_(pa.string()),
        "type_events": pa.list_(pa.int32()),
        "type_days": pa.list_(pa.int32()),
        "type_last_ts": pa.list_(TS),
        "order_value": pa.float64(),
    }
    for name, values in cols.items():
        table = table.append_column(name, pa.array(values, types[name]))
    return table


@pytest.fixture(scope="module")
def table():
    return with_counters(
        histories_table(simulate(24, DAY - dt.timedelta(days=30), DAY, seed=5), DAY)
    )


def test_counter_attributions_are_complete(config, table):
    torch.manual_seed(0)
    model = PropensityModel.from_config(config).eval()
    with torch.no_grad():  # a head that really reads the counters (a fresh one starts at zero)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    batch = encode(table, model.spec, DAY).batch(np.arange(table.num_rows))
    att = counter_attributions(model, batch, 0)
    assert att.names == model.spec.context_features[-len(att.names) :]
    assert att.names[0] == "counters_unknown" and att.features.shape == (
        table.num_rows,
        len(att.names),
    )
    with torch.no_grad():
        full = torch.sigmoid(model(batch)[:, 0]).double().numpy()
    np.testing.assert_allclose(att.prediction, full, rtol=1e-5, atol=1e-6)
    assert np.abs(att.features).sum() > 0 and att.gap.max() <= IG_TOLERANCE
    # Without counters there is nothing to attribute.
    off = PropensityModel(
        config.model.model_copy(update={"counters": False}),
        config.events.types,
        config.target_names,
    ).eval()
    none = counter_attributions(off, encode(table, off.spec, DAY).batch(np.arange(4)), 0)
    assert none.names == [] and none.features.shape == (4, 0)


def test_counter_statistics_count_unknown_rows_and_merge_exactly(config, table):
    whole = stats.summarize(table, {}, DAY, config)["counters"]
    assert whole["unknown"] == 0 and whole["window_events"]["n"] == table.num_rows
    assert whole["window_events"]["sum"] == sum(len(t) for t in table.column("ts").to_pylist())
    orders = sum(e.count("order") for e in table.column("event_type").to_pylist())
    assert whole["window_orders"]["sum"] == orders
    halves = [stats.summarize(table.slice(a, b), {}, DAY, config) for a, b in ((0, 10), (10, 99))]
    assert stats.merge(halves)["counters"] == whole
    # A version-1 table (no counter columns): every row unknown, no histogram values.
    old = stats.summarize(table.drop_columns(["counter_types"]), {}, DAY, config)["counters"]
    assert old["unknown"] == old["unknown_share"] * table.num_rows == table.num_rows
    assert old["order_value"]["n"] == 0
    # Monitoring input: FeatureSpec's encoding and the statistics read the same columns.
    assert FeatureSpec.from_config(config).counters
