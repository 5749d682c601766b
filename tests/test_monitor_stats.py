import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
from _scoring_data import make_histories

from propensity.model import stats

DAY = dt.date(2026, 1, 20)


def test_merge_of_shards_equals_summary_of_the_whole(config):
    table = make_histories(800, DAY, config, seed=3)
    scores = np.random.default_rng(0).random(800)
    whole = stats.summarize(table, {"order_7d": scores}, DAY, config)
    cuts = [0, 1, 300, 301, 800]  # includes a one-row and an empty-free uneven split
    parts = [
        stats.summarize(table.slice(a, b - a), {"order_7d": scores[a:b]}, DAY, config)
        for a, b in zip(cuts, cuts[1:])
    ]
    merged = stats.merge(parts)
    json.dumps(merged)  # JSON-able
    for key in ("rows", "events", "event_types", "null_counts", "unknown_type_share"):
        assert merged[key] == whole[key]
    for group in ("numeric", "scores"):
        for name, hist in whole[group].items():
            got = merged[group][name]
            assert got["counts"] == hist["counts"]
            assert got["quantiles"] == pytest.approx(hist["quantiles"])
            assert got["sum"] == pytest.approx(hist["sum"])


def test_counts_match_a_plain_python_oracle(config):
    table = make_histories(200, DAY, config, seed=5)
    rows = table.to_pylist()
    summary = stats.summarize(table, {}, DAY, config)
    events = [e for r in rows for e in r["event_type"]]
    assert summary["rows"] == 200
    assert summary["events"] == len(events)
    assert summary["event_types"]["counts"]["order"] == events.count("order")
    assert summary["unknown_type_share"] == pytest.approx(events.count("other") / len(events))
    nulls = sum(a is None for r in rows for a in r["article"])
    assert summary["null_shares"]["article"] == pytest.approx(nulls / len(events))
    lengths = [len(r["ts"]) for r in rows]
    hist = summary["numeric"]["history_length"]
    assert hist["n"] == 200 and hist["max"] == max(lengths) and hist["min"] == min(lengths)
    assert hist["counts"][0] == lengths.count(1)  # first bin is [1, 2)
    end = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), dt.UTC)
    recency = sorted((end - r["last_ts"]).total_seconds() / 86400 for r in rows)
    assert summary["numeric"]["days_since_last_event"]["min"] == pytest.approx(recency[0])
    median = summary["numeric"]["days_since_last_event"]["quantiles"]["p50"]
    assert recency[80] <= median <= recency[120]  # read off the histogram, roughly the median


def test_unknown_types_and_out_of_range_values_are_counted_not_dropped(config):
    table = make_histories(50, DAY, config, seed=1)
    renamed = pa.chunked_array(
        [
            pa.ListArray.from_arrays(
                c.offsets, pa.compute.replace_substring(c.flatten(), "view", "pageview")
            )
            for c in table["event_type"].chunks
        ]
    )
    table = table.set_column(table.schema.get_field_index("event_type"), "event_type", renamed)
    scores = np.r_[np.full(48, 0.5), [1.0, np.nan]]
    summary = stats.summarize(table, {"order_7d": scores}, DAY, config)
    assert summary["event_types"]["counts"]["view"] == 0
    assert summary["event_types"]["unexpected"] > 0
    assert sum(summary["event_types"]["counts"].values()) == summary["events"]
    hist = summary["scores"]["order_7d"]
    assert hist["counts"][-1] == 1 and hist["invalid"] == 1 and sum(hist["counts"]) == 49


def test_merge_refuses_different_bins(config, tmp_path):
    from conftest import make_config

    table = make_histories(20, DAY, config)
    a = stats.summarize(table, {}, DAY, config)
    b = stats.summarize(table, {}, DAY, make_config(tmp_path, "histories.max_events=50"))
    with pytest.raises(ValueError, match="history_length"):
        stats.merge([a, b])
    with pytest.raises(ValueError, match="shape"):
        stats.summarize(table, {"order_7d": np.zeros(3)}, DAY, config)


def test_counter_histograms_match_the_window_events_they_count(tmp_path):
    """The counter statistics, recomputed in plain Python from each profile's window events
    (its lists and the `older_*` events the cap cut), on a real snapshot with a planted share of
    rows whose counters are unknown (those are counted, not binned)."""
    import bisect

    import _counters_data as shop
    from conftest import make_config

    cfg = make_config(tmp_path, "histories.retention_days=14", "histories.max_events=20")
    day = dt.date(2026, 1, 16)
    shop.generate(cfg, dt.date(2026, 1, 1), 16, 300)
    table = shop.counters_unknown(shop.snapshot(cfg, day), 0.25)
    summary = stats.summarize(table, {}, day, cfg)["counters"]
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    known = [r for r in table.to_pylist() if r["counter_types"] is not None]
    assert summary["unknown"] == table.num_rows - len(known) > 0
    assert any(r["older_ts"] for r in known)  # the cap cut events the counters still count
    values = {name: [] for name in stats.counter_edges()}
    for r in known:
        ts = r["older_ts"] + r["ts"]
        types = r["older_event_type"] + r["event_type"]
        prices = r["older_price"] + r["price"]
        values["days_since_first_seen"].append((end - min(ts)).total_seconds() / 86400)
        values["window_events"].append(len(ts))
        values["window_orders"].append(types.count("order"))
        values["order_value"].append(sum(p or 0.0 for p, t in zip(prices, types) if t == "order"))
    for name, edges in stats.counter_edges().items():
        counts = [0] * (len(edges) - 1)
        for v in values[name]:  # out-of-range values into the end bins
            counts[min(max(bisect.bisect_right(edges, v) - 1, 0), len(counts) - 1)] += 1
        hist = summary[name]
        assert hist["counts"] == counts, name
        assert hist["n"] == len(known) and hist["sum"] == pytest.approx(sum(values[name]))
