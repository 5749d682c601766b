"""Input and score statistics of a set of histories, in a JSON form that merges exactly.

`summarize` describes one batch (a validation set at training time, or one scoring shard);
`merge` combines shard summaries into the summary of the whole day. Every distribution is a count
histogram on FIXED bins (they depend only on the config, never on the data), so the merge of
shard summaries equals the summary of the concatenated shards: counts add up, quantiles are read
off the merged histogram, shares are recomputed from merged counts.

Numeric histograms put values below the first edge into the first bin and values above the last
edge into the last bin, so no value is lost; `min`/`max` keep the true extremes.

Scores are counted on 1000 fine equal-width bins: the monitor regroups them at the reference's
own quantiles (`quantile_groups`, `regroup`), so its checks have bins that hold data wherever the
scores lie, while the summaries stay mergeable. The fine grid contains the 20-bin grid of schema 1,
so a schema-1 reference is still compared, on its coarse bins (`common_grid`).

`day_events` describes the events of day D itself (timestamps within D) inside the histories:
what tracking delivered that day (types, prices, nulls, active profiles), where a one-day fault
shows at full strength instead of diluted by months of history. A merge of several days keeps
each day's own summary under `by_day`, so the monitor can compare a day with the reference's
days of the same weekday (the model sees the weekday; a mix of weekdays is not its reference).

`counters` describes the histories' window counters, the profile-level inputs the model reads
beside the sequence (histories version 2): the share of rows whose counters are unknown (a
version-1 snapshot, or rows descending from one) and histograms over the known rows.

All work is vectorised over Arrow buffers: no Python loop over rows or events.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config import Config
from propensity.model.batches import prediction_time_ms

SCHEMA_VERSION = 2  # 1: 20 score bins, no day_events / by_day (still read by the monitor)
SCORE_BINS = 1000  # fine equal-width bins of predicted probabilities on [0, 1]
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
NULLABLE_FIELDS = ("article", "brand", "category", "price")
_MS_PER_DAY = 86_400_000.0

# Fixed bin edges of the numeric inputs; the trailing comment gives the unit.
_DAY_EDGES = [0, 0.125, 0.25, 0.5, 1, 2, 3, 5, 7, 10, 14, 21, 30, 45, 60, 90, 120, 150, 180, 270,
              365]
_PRICE_EDGES = [0, 1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000, 1e4, 1e5]
_COUNT_EDGES = [0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 1e4]
_LENGTH_STEPS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 125, 150, 200,
                 300, 500, 1000]


def numeric_edges(cfg: Config) -> dict[str, list[float]]:
    """Bin edges of every numeric input statistic (fixed per config, so summaries merge)."""
    max_events = cfg.histories.max_events
    length = [s for s in _LENGTH_STEPS if s < max_events] + [max_events, max_events + 1]
    return {
        "history_length": [float(x) for x in length],  # events kept per profile
        "days_since_last_event": [float(x) for x in _DAY_EDGES],  # days from last event to end of D
        "history_span_days": [float(x) for x in _DAY_EDGES],  # days from first to last event
        "price": [float(x) for x in _PRICE_EDGES],  # price of each event with a price
    }


def counter_edges() -> dict[str, list[float]]:
    """Bin edges of the counter statistics (rows with known counters)."""
    return {
        "days_since_first_seen": [float(x) for x in _DAY_EDGES],  # first event of the window to end of D
        "window_events": [float(x) for x in _COUNT_EDGES],  # events of the window, lists and older
        "window_orders": [float(x) for x in _COUNT_EDGES],  # order events of the window
        "order_value": [float(x) for x in _PRICE_EDGES],  # sum of their prices
    }


def _counters(histories: pa.Table, end_ms: int) -> dict[str, Any]:
    """The counter statistics of a histories table (unknown: no counter columns, or null)."""
    edges = counter_edges()
    names = ("first_seen", "counter_types", "type_events", "order_value")
    rows = histories.num_rows
    if not rows or any(c not in histories.column_names for c in names):
        empty = {k: _histogram(np.zeros(0), e) for k, e in edges.items()}
        return {"unknown": rows, **empty}
    types = histories.column("counter_types").combine_chunks()
    known = ~types.is_null().to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(types).to_numpy(zero_copy_only=False)
    flat_types = pc.list_flatten(types)
    counts = pc.list_flatten(histories.column("type_events").combine_chunks())
    counts = pc.fill_null(counts, 0).to_numpy(zero_copy_only=False).astype(np.float64)
    orders = pc.fill_null(pc.equal(flat_types, "order"), False).to_numpy(zero_copy_only=False)
    value = pc.fill_null(histories.column("order_value").combine_chunks(), 0.0)
    values = {
        "days_since_first_seen": (end_ms - _ms(histories.column("first_seen"))) / _MS_PER_DAY,
        "window_events": np.bincount(parents, weights=counts, minlength=rows),
        "window_orders": np.bincount(parents, weights=counts * orders, minlength=rows),
        "order_value": value.to_numpy(zero_copy_only=False),
    }
    return {
        "unknown": int((~known).sum()),
        **{k: _histogram(values[k][known], edges[k]) for k in edges},
    }


def score_edges() -> list[float]:
    return [round(i / SCORE_BINS, 10) for i in range(SCORE_BINS + 1)]


def score_histogram(values: np.ndarray) -> dict[str, Any]:
    """Scores on the fixed fine score bins, as a summary holds them."""
    return _finish_histogram(_histogram(values, score_edges()))


def common_grid(a: list[float], b: list[float]) -> list[float] | None:
    """The finer of two bin grids when it contains the other's edges (so both regroup onto the
    coarser one exactly): the coarser grid, or None when neither contains the other."""
    coarse, fine = (a, b) if len(a) <= len(b) else (b, a)
    fine_set = {round(x, 9) for x in fine}
    return list(coarse) if all(round(x, 9) in fine_set for x in coarse) else None


def regroup(hist: dict[str, Any], edges: list[float]) -> np.ndarray:
    """Counts of `hist` on `edges`, a subset of its own edges (bins merged, nothing split)."""
    own = np.round(np.asarray(hist["edges"], dtype=np.float64), 9)
    at = np.searchsorted(own, np.round(np.asarray(edges, dtype=np.float64), 9))
    cum = np.concatenate([[0], np.cumsum(hist["counts"])])
    counts = np.diff(cum[at])
    counts[0] += cum[at[0]]  # below the first kept edge: into the first bin, as summaries do
    counts[-1] += cum[-1] - cum[at[-1]]
    return counts


def quantile_groups(hist: dict[str, Any], groups: int = 10) -> list[float]:
    """Edges (a subset of `hist`'s own) that split its mass into about `groups` equal parts:
    the fine bin edges nearest the reference's quantiles. Edges that would make an empty group
    are dropped, so every group holds data; the outer edges are kept."""
    edges = list(hist["edges"])
    cum = np.cumsum(hist["counts"], dtype=np.float64)
    n = cum[-1] if len(cum) else 0
    if n == 0:
        return [edges[0], edges[-1]]
    inner = []
    for k in range(1, groups):
        # The edge after the first bin whose cumulative count reaches k/groups of the mass.
        i = int(np.searchsorted(cum, k * n / groups, side="left")) + 1
        if i < len(edges) - 1 and (not inner or i > inner[-1]) and cum[i - 1] < n:
            inner.append(i)
    return [edges[0], *(edges[i] for i in inner), edges[-1]]


def _histogram(values: np.ndarray, edges: list[float]) -> dict[str, Any]:
    """Counts on fixed edges (out-of-range values into the end bins) plus what merges exactly."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    e = np.asarray(edges, dtype=np.float64)
    # Bin i holds [e[i], e[i+1]); the last bin also holds e[-1] and everything beyond it.
    idx = np.clip(np.searchsorted(e, finite, side="right") - 1, 0, len(e) - 2)
    counts = np.bincount(idx, minlength=len(e) - 1)
    return {
        "edges": list(edges),
        "counts": [int(c) for c in counts],
        "n": int(finite.size),
        "invalid": int(values.size - finite.size),  # NaN or infinite
        "sum": float(finite.sum()) if finite.size else 0.0,
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
    }


def histogram_quantiles(hist: dict[str, Any]) -> dict[str, float | None]:
    """Quantiles read off a histogram by linear interpolation inside a bin, clamped to min/max."""
    counts = np.asarray(hist["counts"], dtype=np.float64)
    n = counts.sum()
    if n == 0:
        return {f"p{round(q * 100):02d}": None for q in QUANTILES}
    edges = np.asarray(hist["edges"], dtype=np.float64).copy()
    # The end bins also hold out-of-range values: stretch them to the true extremes.
    edges[0] = min(edges[0], hist["min"])
    edges[-1] = max(edges[-1], hist["max"])
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    out = {}
    for q in QUANTILES:
        target = q * n
        i = int(np.clip(np.searchsorted(cum, target, side="left") - 1, 0, len(counts) - 1))
        inside = (target - cum[i]) / counts[i] if counts[i] else 0.0
        value = edges[i] + inside * (edges[i + 1] - edges[i])
        out[f"p{round(q * 100):02d}"] = float(np.clip(value, hist["min"], hist["max"]))
    return out


def _finish_histogram(hist: dict[str, Any]) -> dict[str, Any]:
    hist["mean"] = hist["sum"] / hist["n"] if hist["n"] else None
    hist["quantiles"] = histogram_quantiles(hist)
    return hist


def _flat(table: pa.Table, column: str) -> pa.ChunkedArray:
    """The values of a list column, all profiles concatenated (nulls kept)."""
    col = table.column(column)
    return pa.chunked_array([pc.list_flatten(c) for c in col.chunks], type=col.type.value_type)


def _ms(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps as epoch milliseconds (float, NaN for null)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    ms = pc.cast(col.cast(pa.timestamp("ms", tz="UTC")), pa.int64())
    return ms.to_numpy(zero_copy_only=False).astype(np.float64)


def summarize(
    histories: pa.Table, scores: dict[str, np.ndarray], as_of: dt.date, cfg: Config
) -> dict[str, Any]:
    """Statistics of histories (schema of the aggregation stage) and their scores per target.

    `scores[target]` holds one probability per row of `histories`, in the same order; targets
    missing from `scores` are left out of the summary (e.g. inputs only).
    """
    rows = histories.num_rows
    edges = numeric_edges(cfg)
    end_ms = prediction_time_ms(as_of)
    if rows:
        lengths = pc.list_value_length(histories.column("ts")).to_numpy(zero_copy_only=False)
        lengths = np.nan_to_num(lengths.astype(np.float64), nan=0.0)
        last = _ms(histories.column("last_ts"))
        first = _ms(histories.column("first_ts"))
    else:
        lengths = last = first = np.zeros(0)
    prices = _flat(histories, "price").drop_null() if rows else pa.array([], pa.float64())
    numeric = {
        "history_length": _histogram(lengths, edges["history_length"]),
        "days_since_last_event": _histogram(
            (end_ms - last) / _MS_PER_DAY, edges["days_since_last_event"]
        ),
        "history_span_days": _histogram((last - first) / _MS_PER_DAY, edges["history_span_days"]),
        "price": _histogram(
            np.asarray(prices.to_numpy(), dtype=np.float64) if len(prices) else np.zeros(0),
            edges["price"],
        ),
    }

    types = cfg.events.types
    type_counts = dict.fromkeys(types, 0)
    unexpected = 0
    events = 0
    null_counts = dict.fromkeys(NULLABLE_FIELDS, 0)
    if rows:
        flat_types = _flat(histories, "event_type")
        events = len(flat_types)
        vc = pc.value_counts(flat_types.combine_chunks())
        for value, count in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            # A type outside today's vocabulary (renamed since, or null) is counted as `other`.
            if value in type_counts:
                type_counts[value] += count
            else:
                type_counts["other"] += count
                unexpected += count
        for name in NULLABLE_FIELDS:
            if name in histories.column_names:
                null_counts[name] = _flat(histories, name).null_count
            else:
                null_counts[name] = events

    day = _day_events(histories, end_ms, edges["price"]) if rows else _empty_day(edges["price"])

    score_hists = {}
    for target, values in scores.items():
        values = np.asarray(values)
        if values.shape != (rows,):
            raise ValueError(f"scores[{target!r}] has shape {values.shape}, expected ({rows},)")
        score_hists[target] = _histogram(values, score_edges())

    summary = {
        "schema_version": SCHEMA_VERSION,
        "as_of": as_of.isoformat(),
        "rows": rows,
        "events": events,
        "numeric": numeric,
        "event_types": {"counts": type_counts, "unexpected": unexpected},
        "null_counts": null_counts,
        "scores": score_hists,
        "day_events": day,
        "counters": _counters(histories, end_ms),
    }
    return _finish(summary)


def _empty_day(price_edges: list[float]) -> dict[str, Any]:
    return {"events": 0, "profiles": 0, "type_counts": {},
            "null_counts": dict.fromkeys(NULLABLE_FIELDS, 0),
            "price": _histogram(np.zeros(0), price_edges)}


def _day_events(histories: pa.Table, end_ms: int, price_edges: list[float]) -> dict[str, Any]:
    """What the histories hold of day D's own events (timestamp within the day before `end_ms`):
    counts per raw type, active profiles, null counts per field and the price histogram."""
    ts = _ms(_flat(histories, "ts"))
    today = (ts >= end_ms - _MS_PER_DAY) & (ts < end_ms)
    mask = pa.array(today)
    types = pc.filter(_flat(histories, "event_type").combine_chunks(), mask)
    vc = pc.value_counts(types)
    # The row of each flattened event (rows of one chunk after those of the chunks before it).
    parents = pc.list_parent_indices(histories.column("ts").combine_chunks())
    parents = parents.to_numpy(zero_copy_only=False)
    out = {
        "events": int(today.sum()),
        "profiles": len(np.unique(parents[today])) if today.any() else 0,
        # Raw names (null as "null"): an unexpected value is visible here, not folded into other.
        "type_counts": {("null" if v is None else v): int(c) for v, c in
                        zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())},
        "null_counts": {},
    }
    for name in NULLABLE_FIELDS:
        if name in histories.column_names:
            out["null_counts"][name] = pc.filter(_flat(histories, name).combine_chunks(),
                                                 mask).null_count
        else:
            out["null_counts"][name] = out["events"]
    prices = pc.filter(_flat(histories, "price").combine_chunks(), mask).drop_null()
    out["price"] = _histogram(np.asarray(prices.to_numpy(zero_copy_only=False), np.float64),
                              price_edges)
    return out


def _finish(summary: dict[str, Any]) -> dict[str, Any]:
    """Derived fields (means, quantiles, shares), recomputed from counts after every merge."""
    for hist in summary["numeric"].values():
        _finish_histogram(hist)
    for hist in summary["scores"].values():
        _finish_histogram(hist)
    events = summary["events"]
    counts = summary["event_types"]["counts"]
    summary["event_types"]["shares"] = {
        k: (v / events if events else 0.0) for k, v in counts.items()
    }
    summary["unknown_type_share"] = counts.get("other", 0) / events if events else 0.0
    summary["null_shares"] = {
        k: (v / events if events else 0.0) for k, v in summary["null_counts"].items()
    }
    counters = summary.get("counters")
    if counters is not None:
        for name in counter_edges():
            _finish_histogram(counters[name])
        counters["unknown_share"] = counters["unknown"] / summary["rows"] if summary["rows"] else 0.0
    day = summary.get("day_events")
    if day is not None:
        _finish_histogram(day["price"])
        n = day["events"]
        day["type_shares"] = {k: (v / n if n else 0.0) for k, v in day["type_counts"].items()}
        day["null_shares"] = {k: (v / n if n else 0.0) for k, v in day["null_counts"].items()}
        day["active_share"] = day["profiles"] / summary["rows"] if summary["rows"] else 0.0
        day["events_per_profile"] = n / day["profiles"] if day["profiles"] else 0.0
    return summary


def _merge_days(days: list[dict[str, Any]]) -> dict[str, Any]:
    """The day_events of several batches of the same day(s): counts add up."""
    types: dict[str, int] = {}
    for d in days:
        for k, v in d["type_counts"].items():
            types[k] = types.get(k, 0) + v
    return {
        "events": sum(d["events"] for d in days),
        "profiles": sum(d["profiles"] for d in days),  # a profile lives in one row: no overlap
        "type_counts": dict(sorted(types.items())),
        "null_counts": {k: sum(d["null_counts"][k] for d in days) for k in days[0]["null_counts"]},
        "price": _merge_histograms("day price", [d["price"] for d in days]),
    }


def _strip(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without its per-day parts (what `by_day` holds of each day)."""
    return {k: v for k, v in summary.items() if k not in ("by_day", "as_of_range", "covers")}


def _day_parts(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The one-day summaries a summary is made of (itself, when it is of one day)."""
    return list(summary["by_day"].values()) if summary.get("by_day") else [_strip(summary)]


def _merge_histograms(name: str, hists: list[dict[str, Any]]) -> dict[str, Any]:
    edges = hists[0]["edges"]
    for h in hists[1:]:
        if h["edges"] != edges:
            raise ValueError(f"cannot merge summaries: {name} has different bin edges")
    present = [h for h in hists if h["n"]]
    return {
        "edges": list(edges),
        "counts": [int(sum(c)) for c in zip(*(h["counts"] for h in hists))],
        "n": sum(h["n"] for h in hists),
        "invalid": sum(h["invalid"] for h in hists),
        "sum": float(sum(h["sum"] for h in hists)),
        "min": min(h["min"] for h in present) if present else None,
        "max": max(h["max"] for h in present) if present else None,
    }


def merge(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of the union of the batches behind `summaries` (same config, same bins)."""
    if not summaries:
        raise ValueError("merge needs at least one summary")
    first = summaries[0]
    for s in summaries:
        if s.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"cannot merge summary schema {s.get('schema_version')}")
        if set(s["numeric"]) != set(first["numeric"]) or set(s["scores"]) != set(first["scores"]):
            raise ValueError("cannot merge summaries with different statistics or targets")
        if set(s["event_types"]["counts"]) != set(first["event_types"]["counts"]):
            raise ValueError("cannot merge summaries with different event-type vocabularies")
    days = sorted({s["as_of"] for s in summaries} | {
        d for s in summaries for d in (s.get("by_day") or {})})
    merged = {
        "schema_version": SCHEMA_VERSION,
        "as_of": days[-1],
        "rows": sum(s["rows"] for s in summaries),
        "events": sum(s["events"] for s in summaries),
        "numeric": {
            k: _merge_histograms(k, [s["numeric"][k] for s in summaries]) for k in first["numeric"]
        },
        "event_types": {
            "counts": {
                t: sum(s["event_types"]["counts"][t] for s in summaries)
                for t in first["event_types"]["counts"]
            },
            "unexpected": sum(s["event_types"]["unexpected"] for s in summaries),
        },
        "null_counts": {
            k: sum(s["null_counts"][k] for s in summaries) for k in first["null_counts"]
        },
        "scores": {
            k: _merge_histograms(k, [s["scores"][k] for s in summaries]) for k in first["scores"]
        },
        "day_events": _merge_days([s["day_events"] for s in summaries]),
    }
    if all("counters" in s for s in summaries):  # absent from summaries older than the counters
        merged["counters"] = {
            "unknown": sum(s["counters"]["unknown"] for s in summaries),
            **{
                k: _merge_histograms(k, [s["counters"][k] for s in summaries])
                for k in counter_edges()
            },
        }
    if len(days) > 1:
        merged["as_of_range"] = [days[0], days[-1]]
        parts: dict[str, list[dict[str, Any]]] = {}
        for s in summaries:
            for part in _day_parts(s):
                parts.setdefault(part["as_of"], []).append(part)
        merged["by_day"] = {d: merge(p) for d, p in sorted(parts.items())}
    return _finish(merged)
