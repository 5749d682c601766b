"""The public schemas of the stage: histories (DESIGN.md "Histories") and quarantine.

Readers may compare a partition's Arrow schema with `HISTORY_SCHEMA` (field names included:
Spark writes list items as `element`).

Histories version 2 (`HISTORY_VERSION`, in `_summary.json`) added, after the version-1 columns:

- the counters, over every distinct event of the retention window whether or not it is still
  in the lists (exact: a full rebuild from the raw window gives the same values):
  `first_seen` (the oldest event of the window; the newest is `last_ts`), `counter_types` (the
  event types seen in the window, sorted by name) with, aligned to it, `type_events` (events),
  `type_days` (distinct UTC calendar days of the events' `ts`) and `type_last_ts` (the newest
  event of that type), and `order_value` (sum of the `price` of the `order` events, a missing
  price counting 0);
- `older_*`: the events of the window that `max_events` cut from the lists, reduced to what the
  counters need (`ts`, `event_type`, `price`, `event_key`), oldest first. Tomorrow's merge
  subtracts those that expire and drops redeliveries of them, which the counters could not do
  from sums alone.

A row whose counter and `older_*` columns are all null has unknown counters: it descends from a
version-1 snapshot (written before the counters existed), whose cut events are lost. Incremental
merges keep such a row unknown (rather than count a partial window); `aggregate --full`
rebuilds the day with every counter known.
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
        # Version 2: the counters (null = unknown, see the module docstring).
        ("first_seen", _TS),
        ("counter_types", _list(pa.string())),
        ("type_events", _list(pa.int32())),
        ("type_days", _list(pa.int32())),
        ("type_last_ts", _list(_TS)),
        ("order_value", pa.float64()),
        ("older_ts", _list(_TS)),
        ("older_event_type", _list(pa.string())),
        ("older_price", _list(pa.float64())),
        ("older_event_key", _list(pa.int64())),
    ]
)
HISTORY_COLUMNS = HISTORY_SCHEMA.names
HISTORY_VERSION = 2  # 1: no counters (read as unknown); 2: counters and older_* columns
COUNTER_COLUMNS = HISTORY_COLUMNS[HISTORY_COLUMNS.index("first_seen") :]  # absent in version 1
ORDER_TYPE = "order"  # the event type whose prices `order_value` sums

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
