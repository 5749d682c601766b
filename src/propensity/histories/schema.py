"""The public schemas of the stage: histories (DESIGN.md "Histories") and quarantine.

Readers may compare a partition's Arrow schema with `HISTORY_SCHEMA` (field names included:
Spark writes list items as `element`).
"""

from __future__ import annotations

import pyarrow as pa

_TS = pa.timestamp("ms", tz="UTC")


def _list(t: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("element", t))


# Column order as written. `event_key` is the dedupe key of each event (see docs/aggregate.md).
HISTORY_SCHEMA = pa.schema(
    [
        ("profile_id", pa.string()),
        ("n_events", pa.int32()),
        ("first_ts", _TS),
        ("last_ts", _TS),
        ("ts", _list(_TS)),
        ("event_type", _list(pa.string())),
        ("article", _list(pa.int64())),
        ("brand", _list(pa.int64())),
        ("category", _list(pa.int64())),
        ("price", _list(pa.float64())),
        ("event_key", _list(pa.int64())),
    ]
)
HISTORY_COLUMNS = HISTORY_SCHEMA.names

QUARANTINE_SCHEMA = pa.schema(
    [("raw", pa.string()), ("reason", pa.string()), ("source_file", pa.string())]
)

# Why a record is quarantined; the first that applies wins, in this order.
REASONS = (
    "invalid_json",  # not a JSON object (or an empty line)
    "oversize_field",  # a field longer than events.max_field_chars
    "wrong_type",  # a text field that is not a string, or a price that is not a number
    "missing_profile_id",
    "missing_ts",  # absent, null or an empty string
    "missing_event_type",
    "bad_ts",  # neither ISO-8601 with a zone nor epoch milliseconds
    "ts_too_old",  # before the retention window of the partition's day
    "ts_in_future",  # after the end of the partition's day + events.future_tolerance_hours
    "bad_price",  # negative, not finite, or above events.max_price
)

SUMMARY_NAME = "_summary.json"
