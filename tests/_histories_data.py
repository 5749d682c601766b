"""Helpers for the aggregation tests: hand-made event partitions and a pure-Python oracle.

The oracle is the slow, obvious version of the whole aggregation (parse, validate, dedupe,
pseudonymise, hash, retention, truncation, counters) over every raw partition of the window at
once; the Spark job, incremental or full, must give exactly its rows.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import json
import math
import re

from propensity import storage
from propensity.config import Config
from propensity.hashing import xxhash64

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
TEXT_FIELDS = ("event_id", "profile_id", "event_type", "article_id", "brand", "category")
ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
# The JVM option (and as a --set item) for a Spark process that a test starts: its JVM runs a few
# seconds of tiny jobs, which the JIT's C1 tier alone starts and runs in about half the time of
# the default tiered compilation (C2 pays off on long jobs only; measured on this stream: 40 s
# against 76 s, mean of 4 pairs, at load 11 on 2 cores). The JIT tier changes speed, not results.
QUICK_JIT = "-XX:TieredStopAtLevel=1"
QUICK_JVM = f'spark.conf={{"spark.driver.extraJavaOptions": "{QUICK_JIT}"}}'


def event(pid: str, ts: str | int, etype: str = "view", eid: str | None = None, **extra) -> str:
    """One JSON line of a raw event (fields with None values are left out)."""
    rec = {"event_id": eid, "profile_id": pid, "ts": ts, "event_type": etype, **extra}
    return json.dumps({k: v for k, v in rec.items() if v is not None})


def write_day(cfg: Config, day: str, lines: list[str], mark: bool = True, gz: bool = False) -> str:
    """An events partition with one JSON-lines file (gzipped if asked), marked complete."""
    part = storage.partition(cfg.uri("events"), day)
    data = ("\n".join(lines) + "\n").encode()
    name = "part-00000.jsonl.gz" if gz else "part-00000.jsonl"
    storage.write_bytes(storage.join(part, name), gzip.compress(data) if gz else data)
    if mark:
        storage.mark_complete(part)
    return part


# --- the oracle --------------------------------------------------------------------------


def _ms(moment: dt.datetime) -> int:
    return (moment - EPOCH) // dt.timedelta(milliseconds=1)


def _ts_ms(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if len(str(abs(value))) <= 15 else None
    if not isinstance(value, str):
        return None
    if re.fullmatch(r"-?\d{1,15}", value):
        return int(value)
    if ISO.fullmatch(value):
        try:
            return _ms(dt.datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def check(line: str, day: dt.date, cfg: Config) -> tuple[str | None, dict | None]:
    """(reason, record) of one raw line delivered in the partition of `day`."""
    ev, names = cfg.events, cfg.events.fields
    try:
        rec = json.loads(line)
    except ValueError:
        return "invalid_json", None
    if not isinstance(rec, dict):
        return "invalid_json", None
    v = {k: rec.get(getattr(names, k)) for k in (*TEXT_FIELDS, "ts", "price")}
    texts = [x if isinstance(x, str) else json.dumps(x) for x in v.values() if x is not None]
    if any(len(t) > ev.max_field_chars for t in texts):
        return "oversize_field", None
    price = v["price"]
    if any(v[k] is not None and not isinstance(v[k], str) for k in TEXT_FIELDS) or (
        price is not None and (isinstance(price, bool) or not isinstance(price, (int, float)))
    ):
        return "wrong_type", None
    if not v["profile_id"]:
        return "missing_profile_id", None
    if v["ts"] is None or v["ts"] == "":
        return "missing_ts", None
    if not v["event_type"]:
        return "missing_event_type", None
    ts = _ts_ms(v["ts"])
    if ts is None:
        return "bad_ts", None
    end = _ms(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), UTC))
    if ts < end - cfg.histories.retention_days * 86_400_000:
        return "ts_too_old", None
    if ts > end + ev.future_tolerance_hours * 3_600_000:
        return "ts_in_future", None
    if price is not None and (math.isnan(price) or price < 0 or price > ev.max_price):
        return "bad_price", None
    return None, {**v, "ts": ts, "price": None if price is None else float(price)}


def oracle(cfg: Config, key: bytes, raw: dict[dt.date, list[str]], day: dt.date) -> list[dict]:
    """The snapshot of `day` from the raw lines of each partition day (rows as Arrow pylists)."""
    events: dict[str, dict[int, tuple]] = {}
    for src_day in sorted(raw):
        for line in raw[src_day]:
            reason, r = check(line, src_day, cfg)
            if reason:
                continue
            pid = hmac.new(key, r["profile_id"].encode(), hashlib.sha256).hexdigest()[:32]

            def h(x):
                return xxhash64(x) if x else None

            ekey = xxhash64(
                f"id:{r['event_id']}"
                if r["event_id"]
                else f"ev|{r['ts']}|{r['event_type']}|{r['article_id'] or ''}"
            )
            etype = r["event_type"] if r["event_type"] in cfg.events.vocabulary else "other"
            item = (
                r["ts"],
                ekey,
                etype,
                h(r["article_id"]),
                h(r["brand"]),
                h(r["category"]),
                r["price"],
            )
            # The first delivery of a key wins: earliest partition, then the smallest record.
            order = (src_day, *[(x is not None, x) for x in item])
            kept = events.setdefault(pid, {})
            if ekey not in kept or order < kept[ekey][0]:
                kept[ekey] = (order, item)
    start = (
        _ms(dt.datetime.combine(day, dt.time(), UTC))
        - (cfg.histories.retention_days - 1) * 86_400_000
    )
    rows = []
    for pid, kept in sorted(events.items()):
        window = sorted(i for _, i in kept.values() if i[0] >= start)
        items = window[-cfg.histories.max_events :]
        if not items:
            continue
        cols = list(zip(*items))
        ts = [EPOCH + dt.timedelta(milliseconds=t) for t in cols[0]]
        older = window[: len(window) - len(items)]
        rows.append(
            {
                "profile_id": pid,
                "n_events": len(items),
                "first_ts": ts[0],
                "last_ts": ts[-1],
                "ts": ts,
                "event_type": list(cols[2]),
                "article": list(cols[3]),
                "brand": list(cols[4]),
                "category": list(cols[5]),
                "price": list(cols[6]),
                "event_key": list(cols[1]),
                **counters(window),
                "older_ts": [EPOCH + dt.timedelta(milliseconds=i[0]) for i in older],
                "older_event_type": [i[2] for i in older],
                "older_price": [i[6] for i in older],
                "older_event_key": [i[1] for i in older],
            }
        )
    return rows


def counters(window: list[tuple]) -> dict:
    """The counter columns of a profile from all its distinct events of the window, by
    definition (docs/aggregate.md, "Counters"): items (ts ms, key, type, ..., price), sorted."""
    types = sorted({i[2] for i in window})
    of = {t: [i for i in window if i[2] == t] for t in types}
    return {
        "first_seen": EPOCH + dt.timedelta(milliseconds=window[0][0]),
        "counter_types": types,
        "type_events": [len(of[t]) for t in types],
        "type_days": [len({i[0] // 86_400_000 for i in of[t]}) for t in types],
        "type_last_ts": [
            EPOCH + dt.timedelta(milliseconds=max(i[0] for i in of[t])) for t in types
        ],
        # Oldest first, as the job sums (float addition is not associative).
        "order_value": sum((i[6] or 0.0 for i in of.get("order", [])), 0.0),
    }


def read_raw(cfg: Config, days: list[dt.date]) -> dict[dt.date, list[str]]:
    """The raw lines of event partitions (JSON lines, plain or gzipped)."""
    out = {}
    for d in days:
        lines = []
        for uri in storage.list_files(storage.partition(cfg.uri("events"), d)):
            data = storage.read_bytes(uri)  # pyarrow may already have decompressed a .gz
            text = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            lines += text.decode().split("\n")[:-1]
        out[d] = lines
    return out


def snapshot_rows(cfg: Config, day) -> list[dict]:
    """A histories partition as Python rows, sorted by profile_id."""
    return (
        storage.read_parquet(storage.partition(cfg.uri("histories"), day))
        .sort_by("profile_id")
        .to_pylist()
    )
