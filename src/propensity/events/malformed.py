"""Malformed records: deterministic corruptions of real records, one named kind each.

The aggregator quarantines them with reasons named after these kinds (docs/generate.md has the
exact definitions). Every malformed record is a corrupted *copy* of a valid record delivered the
same day, with its own event id (`<id>-bad`), so the valid stream is unchanged by `--bad-share`.
Bad records are few (a share of the day), so plain Python per record is fine here.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

# Kinds a JSON-lines stream can carry, and the subset a typed Parquet schema can hold.
JSON_KINDS = (
    "invalid_json",
    "missing_profile_id",
    "missing_ts",
    "missing_event_type",
    "wrong_type",
    "bad_ts",
    "absurd_ts",
    "oversize_field",
)
PARQUET_KINDS = (
    "missing_profile_id",
    "missing_ts",
    "missing_event_type",
    "bad_ts",
    "absurd_ts",
    "oversize_field",
)
UNPARSEABLE_TS = (
    "yesterday",
    "2026-13-45T25:61:00Z",
    "21/11/2026 19:03",
    "1700000000000abc",
    "2026-02-30T10:00:00+01:00",
)
OVERSIZE_CHARS = 10_240  # length of the article_id of an `oversize_field` record


def kinds_for(fmt: str) -> tuple[str, ...]:
    return JSON_KINDS if fmt == "jsonl" else PARQUET_KINDS


def assign_kinds(rng: np.random.Generator, n: int, kinds: tuple[str, ...]) -> list[str]:
    """n kinds in random order, each kind used equally often (counts differ by at most one)."""
    start = int(rng.integers(len(kinds)))
    order = (np.arange(n) + start) % len(kinds)
    return [kinds[i] for i in rng.permutation(order)]


def corrupt(record: dict, kind: str, rng: np.random.Generator, day: dt.date, names: dict) -> dict:
    """A corrupted copy of a record (field names per `names`), for every kind but invalid_json."""
    r = dict(record)
    r[names["event_id"]] = f"{r[names['event_id']]}-bad"
    variant = int(rng.integers(3))
    if kind.startswith("missing_"):
        field = names[kind[len("missing_") :]]
        # Absent key or explicit null: both mean missing.
        if variant == 0:
            r.pop(field)
        else:
            r[field] = None
    elif kind == "wrong_type":
        pid = names["profile_id"]
        if variant == 0:
            r[pid] = {"id": r[pid]}
        elif variant == 1:
            r[pid] = int("".join(c for c in r[pid] if c.isdigit()) or 0)
        else:
            r[names["price"]] = "abc"
    elif kind == "bad_ts":
        r[names["ts"]] = UNPARSEABLE_TS[int(rng.integers(len(UNPARSEABLE_TS)))]
    elif kind == "absurd_ts":
        r[names["ts"]] = absurd_timestamp(rng, day, variant)
    elif kind == "oversize_field":
        r[names["article_id"]] = "a" + "x" * (OVERSIZE_CHARS - 1)
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return r


def absurd_timestamp(rng: np.random.Generator, day: dt.date, variant: int) -> str:
    """An ISO timestamp in 1970, or 3 to 30 years after the partition day."""
    if variant == 0:
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        moment += dt.timedelta(seconds=int(rng.integers(365 * 86_400)))
    else:
        moment = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        moment += dt.timedelta(days=int(rng.integers(3 * 365, 30 * 365)))
    return moment.isoformat(timespec="milliseconds")


def json_lines(
    base_lines: list[str], kinds: list[str], rng, day: dt.date, names: dict
) -> list[str]:
    """Malformed JSON lines from valid lines, one per kind in `kinds`."""
    out = []
    for line, kind in zip(base_lines, kinds):
        if kind == "invalid_json":
            # Cut inside the object: the closing brace is gone, so it can never parse.
            out.append(line[: int(rng.integers(1, len(line) - 1))])
        else:
            out.append(
                json.dumps(corrupt(json.loads(line), kind, rng, day, names), separators=(",", ":"))
            )
    return out


def parquet_rows(
    base_rows: list[dict], kinds: list[str], rng, day: dt.date, names: dict
) -> list[dict]:
    """Malformed Parquet rows (nulls, bad strings) from valid rows, one per kind in `kinds`."""
    out = []
    for row, kind in zip(base_rows, kinds):
        r = corrupt(row, kind, rng, day, names)
        out.append({k: r.get(k) for k in row})  # a dropped column is a null in Parquet
    return out
