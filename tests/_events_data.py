"""Read a generated stream back, and an independent classifier of malformed records.

The classifier follows the kind definitions of docs/generate.md, written from the contract
rather than from the generator's code, so tests can check that every injected record is
recognised as malformed and no valid record is. Other stages' tests may use it as an oracle.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pyarrow.parquet as pq

from propensity import storage

MAX_FIELD_CHARS = 512  # config events.max_field_chars
REQUIRED = ("profile_id", "ts", "event_type")
GZIP_MAGIC = b"\x1f\x8b"


def partition_lines(out: str, day: dt.date | str) -> list[str]:
    """Every line of a complete JSON-lines partition, part by part."""
    part = storage.partition(out, day)
    storage.require_complete(part)
    lines = []
    for uri in storage.list_files(part, suffix=".jsonl.gz"):
        data = storage.read_bytes(uri)
        # storage.read_bytes may already have decompressed it (pyarrow detects ".gz").
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
        lines.extend(data.decode().splitlines())
    return lines


def partition_rows(out: str, day: dt.date | str) -> list[dict]:
    """Every row of a complete Parquet partition."""
    rows = []
    for uri in storage.parquet_files(storage.partition(out, day)):
        rows.extend(pq.read_table(uri).to_pylist())
    return rows


def parse_ts(value) -> dt.datetime | None:
    """An aware UTC datetime from ISO-8601 with zone or epoch milliseconds; None if unparseable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)


def classify(record: dict | str, day: dt.date) -> str | None:
    """The malformed kind of a raw record (a JSON line or a Parquet row), or None if valid."""
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except json.JSONDecodeError:
            return "invalid_json"
    for name in REQUIRED:
        if record.get(name) is None:
            return f"missing_{name}"
    pid, price = record["profile_id"], record.get("price")
    if not isinstance(pid, str) or isinstance(price, str | bool | dict | list):
        return "wrong_type"
    ts = parse_ts(record["ts"])
    if ts is None:
        return "bad_ts"
    if ts.year < 2000 or ts.date() > day + dt.timedelta(days=2):
        return "absurd_ts"
    if any(isinstance(v, str) and len(v) > MAX_FIELD_CHARS for v in record.values()):
        return "oversize_field"
    return None
