"""Tiny synthetic histories for training tests, written in the histories contract.

Each profile has a hidden intent z ~ N(0, 1): high intent means more add_to_cart/checkout events
and more orders, in the past and in the future alike, so a model can learn from the history who
orders next. `write_histories_days` writes `histories/dt=D/part-00000.parquet` + `_SUCCESS` for
each requested day, each snapshot holding every event up to the end of that day (last N kept).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from propensity import storage
from propensity.histories.schema import COUNTER_COLUMNS, HISTORY_SCHEMA

DAY_MS = 86_400_000
TS = pa.timestamp("ms", tz="UTC")
# The histories contract without the dedupe key, which the model never reads.
# A version-1 snapshot (no counters: the model reads them as unknown).
SCHEMA = pa.schema([f for f in HISTORY_SCHEMA if f.name not in ("event_key", *COUNTER_COLUMNS)])


def day_ms(day: dt.date) -> int:
    """Epoch ms of 00:00 UTC of `day`."""
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc).timestamp() * 1000)


def event(ts_ms: int, event_type: str, article=None, brand=None, category=None, price=None):
    return (ts_ms, event_type, article, brand, category, price)


def simulate(n_profiles: int, start: dt.date, end: dt.date, seed: int = 0) -> dict[str, list]:
    """Events per profile id between `start` and `end` (inclusive), with planted intent signal."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    n_days = (end - start).days + 1
    for p in range(n_profiles):
        z = rng.normal()
        events = []
        for d in range(n_days):
            if rng.random() > 0.25 + 0.1 * (z > 0):
                continue
            base = day_ms(start + dt.timedelta(days=d))
            k = 1 + rng.poisson(2)
            times = np.sort(rng.integers(0, DAY_MS, size=k))
            w_cart = np.exp(1.2 * z)
            probs = np.array([3.0, 1.0, 0.6 * w_cart, 0.2, 0.3, 0.3 * w_cart])
            names = ["view", "search", "add_to_cart", "remove_from_cart", "wishlist", "checkout"]
            for t in times:
                kind = names[rng.choice(len(names), p=probs / probs.sum())]
                article = int(rng.integers(-(2**62), 2**62)) if kind != "search" else None
                brand = int(rng.integers(0, 50)) if article is not None else None
                category = int(rng.integers(0, 20)) if article is not None else None
                price = float(rng.lognormal(3, 1)) if article is not None else None
                events.append(event(base + int(t), kind, article, brand, category, price))
            if rng.random() < 1 / (1 + np.exp(-(-2.5 + 1.8 * z))):
                order_ts = base + int(times[-1]) + 60_000
                events.append(event(order_ts, "order", None, None, None, 40.0))
        if events:
            events.sort(key=lambda e: e[0])
            out[f"p{seed:03d}-{p:06d}"] = events
    return out


def histories_table(events: dict[str, list], day: dt.date, max_events: int = 200,
                    older: bool = False) -> pa.Table:
    """The snapshot at the end of `day`: each profile's events up to then, last `max_events`;
    with `older`, also the `older_*` columns of the events the cap cut (as the aggregation
    writes them, docs/aggregate.md)."""
    end = day_ms(day + dt.timedelta(days=1))
    rows = {name: [] for name in SCHEMA.names}
    cut = {"older_ts": [], "older_event_type": [], "older_price": []}
    for pid in sorted(events):
        window = [e for e in events[pid] if e[0] < end]
        kept, dropped = window[-max_events:], window[: max(len(window) - max_events, 0)]
        if not kept:
            continue
        cut["older_ts"].append([e[0] for e in dropped])
        cut["older_event_type"].append([e[1] for e in dropped])
        cut["older_price"].append([e[5] for e in dropped])
        ts = [e[0] for e in kept]
        rows["profile_id"].append(pid)
        rows["n_events"].append(len(kept))
        rows["first_ts"].append(ts[0])
        rows["last_ts"].append(ts[-1])
        rows["ts"].append(ts)
        for i, name in enumerate(["event_type", "article", "brand", "category", "price"], start=1):
            rows[name].append([e[i] for e in kept])
    table = pa.table(rows, schema=SCHEMA)
    if older:
        table = table.append_column("older_ts", pa.array(cut["older_ts"], pa.list_(pa.int64())))
        table = table.append_column("older_event_type", pa.array(cut["older_event_type"]))
        table = table.append_column("older_price",
                                    pa.array(cut["older_price"], pa.list_(pa.float64())))
    return table


def write_histories(cfg, day: dt.date, table: pa.Table) -> str:
    """Write one complete histories partition (Parquet + `_SUCCESS`); returns its URI."""
    part = storage.partition(cfg.uri("histories"), day)
    storage.write_parquet(table, storage.join(part, "part-00000.parquet"))
    storage.mark_complete(part)
    return part


def write_histories_days(cfg, events: dict[str, list], days: list[dt.date]) -> None:
    for day in days:
        write_histories(cfg, day, histories_table(events, day, cfg.histories.max_events))
