"""The aggregation as pure DataFrame -> DataFrame functions (no I/O), called directly by tests.

    raw lines / Parquet rows --fields_from_json/fields_from_parquet--> text fields
        --validate--> events with a quarantine `reason` (null when good)
        --merge(previous snapshot)--> one row per profile, with statistics columns
        --finish--> the histories contract (schema.HISTORY_SCHEMA)

The counters (first_seen, per type events/days/last, order_value) are recomputed from the lists
and the `older_*` events whenever a profile changes, so they are the same whether a day was
merged incrementally or rebuilt (docs/aggregate.md, "Counters").

Everything runs as Spark SQL expressions (no Python UDFs). Validation depends only on a
record and the day of the partition that delivered it (`src_day`), and a merge is a pure
function of the events it has seen, so a full rebuild from the raw window and the
incremental chain give the same rows (see docs/aggregate.md for the argument).
"""

from __future__ import annotations

import datetime as dt
import re
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from propensity.config import Config
from propensity.histories.schema import COUNTER_COLUMNS, HISTORY_COLUMNS, ORDER_TYPE
from propensity.pseudonym import pseudonym_column

FIELD_KEYS = (
    "event_id",
    "profile_id",
    "ts",
    "event_type",
    "article_id",
    "brand",
    "category",
    "price",
)
TEXT_KEYS = ("event_id", "profile_id", "event_type", "article_id", "brand", "category")
# Event fields inside a history, in sort order: time first, then the dedupe key breaks ties.
EVENT_FIELDS = ["ts", "event_key", "event_type", "article", "brand", "category", "price"]
# What the counters need of an event cut from the lists (`older_<field>` columns), same order.
OLDER_FIELDS = ["ts", "event_key", "event_type", "price"]
_OLDER_DDL = "array<struct<ts:timestamp,event_key:bigint,event_type:string,price:double>>"
ISO_TS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
EPOCH_MS = r"^-?\d{1,15}$"
HISTORY_DDL = (
    "profile_id string, n_events int, first_ts timestamp, last_ts timestamp, ts array<timestamp>, "
    "event_type array<string>, article array<bigint>, brand array<bigint>, "
    "category array<bigint>, price array<double>, event_key array<bigint>, "
    "first_seen timestamp, counter_types array<string>, type_events array<int>, "
    "type_days array<int>, type_last_ts array<timestamp>, order_value double, "
    "older_ts array<timestamp>, older_event_type array<string>, older_price array<double>, "
    "older_event_key array<bigint>"
)
DAY_MS = 86_400_000
_CORRUPT = "_corrupt_record"


def window_start(day: dt.date, retention_days: int) -> dt.datetime:
    """First instant kept in the snapshot of `day`: the last `retention_days` days up to its end."""
    first = day + dt.timedelta(days=1 - retention_days)
    return dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)


def _field(cfg: Config, key: str) -> str:
    return getattr(cfg.events.fields, key)


def fields_from_json(lines: DataFrame, cfg: Config) -> DataFrame:
    """(raw, source_file, src_day) -> + json_ok, types_ok and one text column `f_<key>` per
    event field.

    Every field is read as text (a number keeps its JSON text, an object its JSON text), so
    nothing is lost before validation; `types_ok` is false when a text field holds a number,
    boolean, object or array, or the price a string, object or array (a regex on the line).
    """
    schema = T.StructType(
        [T.StructField(_field(cfg, k), T.StringType()) for k in FIELD_KEYS]
        + [T.StructField(_CORRUPT, T.StringType())]
    )
    opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}
    parsed = lines.withColumn("_j", F.from_json("raw", schema, opts))
    j = F.col("_j")
    return parsed.select(
        "raw",
        "source_file",
        "src_day",
        (j.isNotNull() & j.getField(_CORRUPT).isNull()).alias("json_ok"),
        (~F.col("raw").rlike(_wrong_type_pattern(cfg))).alias("types_ok"),
        *[j.getField(_field(cfg, k)).alias(f"f_{k}") for k in FIELD_KEYS],
    )


def _wrong_type_pattern(cfg: Config) -> str:
    """A key of the object followed by a value of the wrong JSON type. Keys are matched only
    after `{` or `,`, so the same text inside a string value (where quotes are escaped) does
    not count."""
    text = "|".join(re.escape(_field(cfg, k)) for k in TEXT_KEYS)
    price = re.escape(_field(cfg, "price"))
    return rf'[{{,]\s*"(?:(?:{text})"\s*:\s*[-0-9tf{{\[]|{price}"\s*:\s*["{{\[])'


def fields_from_parquet(rows: DataFrame, cfg: Config) -> DataFrame:
    """Parquet rows (+ source_file, src_day) -> the same columns as `fields_from_json`
    (`types_ok` from the column types: strings for text fields, a number for the price)."""
    types = {
        f.name: f.dataType for f in rows.schema.fields if f.name not in ("source_file", "src_day")
    }

    def as_text(name: str) -> Column:
        t = types.get(name)
        if t is None:
            return F.lit(None).cast("string")
        if isinstance(t, T.StringType):
            return F.col(name)
        if isinstance(t, T.TimestampType):  # an instant: write it with its zone
            return F.date_format(name, "yyyy-MM-dd'T'HH:mm:ss.SSSXXX")
        if isinstance(t, (T.StructType, T.ArrayType, T.MapType)):
            return F.to_json(name)
        return F.col(name).cast("string")

    def wrong_type(key: str) -> Column:
        name, t = _field(cfg, key), types.get(_field(cfg, key))
        ok = t is None or (
            isinstance(t, T.NumericType) if key == "price" else isinstance(t, T.StringType)
        )
        return F.lit(False) if ok else F.col(name).isNotNull()

    return rows.select(
        F.to_json(F.struct(*[F.col(n) for n in types])).alias("raw"),
        "source_file",
        "src_day",
        F.lit(True).alias("json_ok"),
        (~reduce(lambda a, b: a | b, [wrong_type(k) for k in (*TEXT_KEYS, "price")])).alias(
            "types_ok"
        ),
        *[as_text(_field(cfg, k)).alias(f"f_{k}") for k in FIELD_KEYS],
    )


def _blank(c: Column) -> Column:
    return c.isNull() | (c == "")


def _size(c: str | Column) -> Column:
    """Elements of an array, 0 for a null one. `F.size` alone gives -1 for null outside ANSI
    mode (legacy sizeOfNull: Spark 3.5's default, Spark 4 with ansi off) and null within it."""
    c = F.col(c) if isinstance(c, str) else c
    return F.when(c.isNull(), 0).otherwise(F.size(c))


def validate(fields: DataFrame, cfg: Config, key: bytes) -> DataFrame:
    """Text fields -> one row per record: `reason` (null when good) and, for good records, the
    cleaned event: pseudonymised profile_id, ts (UTC, ms), event_type (vocabulary or `other`),
    hashed article/brand/category, price, event_key; `raw` is kept for bad records only."""
    ev = cfg.events
    f = {k: F.col(f"f_{k}") for k in FIELD_KEYS}
    end_ms = (F.unix_date("src_day").cast("long") + 1) * DAY_MS
    start_ms = end_ms - cfg.histories.retention_days * DAY_MS
    future_ms = end_ms + int(ev.future_tolerance_hours * 3_600_000)
    # The cast only sees 1-15 digits (a long, whatever the ANSI mode); the ISO parse is a try_.
    ts_ms = F.when(f["ts"].rlike(EPOCH_MS), f["ts"].cast("long")).when(
        f["ts"].rlike(ISO_TS), F.unix_millis(F.try_to_timestamp(f["ts"]))
    )
    price = F.expr("try_cast(f_price AS DOUBLE)")
    oversize = reduce(
        lambda a, b: a | b,
        [F.coalesce(F.length(f[k]) > ev.max_field_chars, F.lit(False)) for k in FIELD_KEYS],
    )
    checked = fields.select(
        "*",
        ts_ms.alias("_ts_ms"),
        price.alias("_price"),
        start_ms.alias("_start"),
        future_ms.alias("_future"),
    )
    p, t = F.col("_price"), F.col("_ts_ms")
    reason = (
        F.when(~F.col("json_ok"), "invalid_json")
        .when(oversize, "oversize_field")
        .when(~F.col("types_ok") | (f["price"].isNotNull() & p.isNull()), "wrong_type")
        .when(_blank(f["profile_id"]), "missing_profile_id")
        .when(_blank(f["ts"]), "missing_ts")
        .when(_blank(f["event_type"]), "missing_event_type")
        .when(t.isNull(), "bad_ts")
        .when(t < F.col("_start"), "ts_too_old")
        .when(t > F.col("_future"), "ts_in_future")
        .when(p.isNotNull() & (F.isnan(p) | (p < 0) | (p > ev.max_price)), "bad_price")
    )
    checked = checked.withColumn("reason", reason)
    good = F.col("reason").isNull()
    known = f["event_type"].isin(ev.vocabulary)
    key_text = F.when(~_blank(f["event_id"]), F.concat(F.lit("id:"), f["event_id"])).otherwise(
        F.concat_ws(
            "|",
            F.lit("ev"),
            t.cast("string"),
            f["event_type"],
            F.coalesce(f["article_id"], F.lit("")),
        )
    )

    def hashed(c: Column) -> Column:
        return F.when(~_blank(c), F.xxhash64(c))

    return checked.select(
        "reason",
        F.when(~good, F.col("raw")).alias("raw"),
        F.when(~good, F.col("source_file")).alias("source_file"),  # kept for bad records only
        "src_day",
        F.when(good, pseudonym_column(f["profile_id"], key)).alias("profile_id"),
        F.timestamp_millis(t).alias("ts"),
        F.when(known, f["event_type"]).otherwise(F.lit("other")).alias("event_type"),
        (good & ~known).alias("unknown_type"),
        hashed(f["article_id"]).alias("article"),
        hashed(f["brand"]).alias("brand"),
        hashed(f["category"]).alias("category"),
        p.alias("price"),
        F.xxhash64(key_text).alias("event_key"),
    )


def with_counter_columns(snapshot: DataFrame) -> DataFrame:
    """A snapshot in the current layout: the counter columns that a version-1 snapshot lacks
    are added as nulls, which read as "unknown" (schema module docstring)."""
    missing = [c for c in COUNTER_COLUMNS if c not in snapshot.columns]
    if not missing:
        return snapshot
    types = {
        f.name: f.dataType for f in snapshot.sparkSession.createDataFrame([], HISTORY_DDL).schema
    }
    return snapshot.select("*", *[F.lit(None).cast(types[c]).alias(c) for c in missing])


def _counters(every: Column) -> dict[str, Column]:
    """The counter columns of a profile from all its distinct events of the window (`every`:
    array of structs with OLDER_FIELDS, sorted oldest first)."""
    types = F.array_sort(F.array_distinct(F.transform(every, lambda x: x["event_type"])))
    by_type = F.transform(types, lambda t: F.filter(every, lambda x: x["event_type"] == t))
    # Active days count UTC calendar days of the event time, not of the delivery: a late event
    # adds its own day (once), as the full rebuild would count it.
    day = lambda x: F.floor(F.unix_millis(x["ts"]) / DAY_MS)
    orders = F.filter(every, lambda x: x["event_type"] == ORDER_TYPE)
    return {
        "first_seen": F.get(every, 0)["ts"],
        "counter_types": types,
        "type_events": F.transform(by_type, lambda a: F.size(a)),
        "type_days": F.transform(by_type, lambda a: F.size(F.array_distinct(F.transform(a, day)))),
        "type_last_ts": F.transform(by_type, lambda a: F.get(a, F.size(a) - 1)["ts"]),
        # Summed oldest first: the same order in every mode, so the same float.
        "order_value": F.aggregate(
            orders,
            F.lit(0.0).cast("double"),
            lambda acc, x: acc + F.coalesce(x["price"], F.lit(0.0)),
        ),
    }


def merge(
    events: DataFrame,
    previous: DataFrame | None,
    day: dt.date,
    cfg: Config,
    broadcast_events: bool = False,
) -> DataFrame:
    """Good events (+ the previous snapshot) -> one row per profile with the history columns
    and statistics columns (`_had`, `_n_arrived`, `_n_unique`, `_n_new`, `_n_all`,
    `_n_within`, `_known`), including profiles whose events all expired (n_events = 0). The statistics
    columns are never null (a missing array counts 0), so they read the same with ANSI mode on
    or off.

    Duplicates (same event_key within a profile) keep the first delivery: the one already in
    the previous snapshot, else the one from the earliest partition, else the smallest record.
    The snapshot is never shuffled when `broadcast_events` (the day's events fit in memory):
    its rows stream through a broadcast join, and a profile without new events whose history
    is still inside the window is passed through untouched.

    Events that `max_events` cuts from the lists move to the `older_*` columns while inside the
    window (a redelivery of one is a duplicate, not a new event); the counters are recomputed
    from both. A row of a snapshot without counters (`_known` false) keeps them unknown.
    """
    n_max = cfg.histories.max_events
    cutoff = F.timestamp_millis(
        F.lit(int(window_start(day, cfg.histories.retention_days).timestamp() * 1000))
    )
    arrived = F.struct("event_key", "src_day", *[c for c in EVENT_FIELDS if c != "event_key"])
    # Only the collected lists travel through the joins: the per-profile work below runs once.
    incoming = events.groupBy("profile_id").agg(F.collect_list(arrived).alias("_arrived"))
    if previous is None:
        # An empty snapshot rather than a second code path: every mode then runs the same plan
        # and writes the same schema (nullability included).
        previous = events.sparkSession.createDataFrame([], HISTORY_DDL)
    previous = with_counter_columns(previous).select(*HISTORY_COLUMNS)
    known = previous.join(
        F.broadcast(incoming) if broadcast_events else incoming, "profile_id", "left"
    )
    created = incoming.join(previous.select("profile_id"), "profile_id", "left_anti").select(
        "profile_id",
        *[F.lit(None).cast(f.dataType).alias(f.name) for f in previous.schema.fields[1:]],
        "_arrived",
    )
    j = known.unionByName(created).withColumn("_arrived", F.array_sort("_arrived"))
    # Sorted by key then delivery: the first of each run of equal keys is the one kept.
    firsts = F.filter(
        "_arrived",
        lambda x, i: (i == 0) | (F.get(F.col("_arrived"), i - 1)["event_key"] != x["event_key"]),
    )
    j = j.select(
        *[c for c in j.columns if c != "_arrived"],
        _size("_arrived").alias("_n_arrived"),
        F.transform(firsts, lambda x: F.struct(*[x[c].alias(c) for c in EVENT_FIELDS])).alias(
            "_new"
        ),
    )
    had, new = F.col("n_events").isNotNull(), F.col("_new")
    older_keys = F.coalesce(F.col("older_event_key"), F.array().cast("array<bigint>"))
    j = j.select(
        "*",
        had.alias("_had"),
        (~had | F.col("counter_types").isNotNull()).alias("_known"),
        # The oldest event of the window is first_seen where the counters are known.
        (new.isNull() & (F.coalesce("first_seen", "first_ts") >= cutoff)).alias("_untouched"),
        F.when(
            had & new.isNotNull(),
            F.filter(
                new,
                lambda x: (
                    ~F.array_contains("event_key", x["event_key"])
                    & ~F.array_contains(older_keys, x["event_key"])
                ),
            ),
        )
        .otherwise(new)
        .alias("_fresh"),
    )
    old = F.arrays_zip(*EVENT_FIELDS)
    every = (
        F.when(new.isNull(), old)
        .when(~F.col("_had"), F.col("_fresh"))
        .otherwise(F.concat(old, "_fresh"))
    )
    j = j.select(
        "*",
        F.when(
            ~F.col("_untouched"), F.array_sort(F.filter(every, lambda x: x["ts"] >= cutoff))
        ).alias("_within"),
    )
    n = _size("_within")
    j = j.select(
        "*",
        F.slice("_within", F.greatest(n - n_max + 1, F.lit(1)), n_max).alias("_hist"),
        F.slice("_within", 1, F.greatest(n - n_max, F.lit(0))).alias("_cut"),
    )
    keep, known, size = F.col("_untouched"), F.col("_known"), _size("_hist")
    older = F.transform(
        F.arrays_zip(*[f"older_{c}" for c in OLDER_FIELDS]),
        lambda x: F.struct(*[x[f"older_{c}"].alias(c) for c in OLDER_FIELDS]),
    )
    project = lambda x: F.struct(*[x[c].alias(c) for c in OLDER_FIELDS])
    j = j.select(
        "*",
        F.when(
            ~keep & known,
            F.array_sort(
                F.concat(
                    F.coalesce(
                        F.filter(older, lambda x: x["ts"] >= cutoff), F.array().cast(_OLDER_DDL)
                    ),
                    F.transform("_cut", project),
                )
            ),
        ).alias("_older"),
    )
    # Every older event sorts below every listed one: the concatenation is in order.
    counters = _counters(F.concat("_older", F.transform("_hist", project)))
    return j.select(
        "profile_id",
        F.when(keep, F.col("n_events")).otherwise(size.cast("int")).alias("n_events"),
        F.when(keep, F.col("first_ts")).otherwise(F.get(F.col("_hist"), 0)["ts"]).alias("first_ts"),
        F.when(keep, F.col("last_ts"))
        .otherwise(F.get(F.col("_hist"), size - 1)["ts"])
        .alias("last_ts"),
        *[F.when(keep, F.col(c)).otherwise(F.col("_hist")[c]).alias(c) for c in EVENT_FIELDS],
        *[F.when(keep, F.col(c)).when(known, e).alias(c) for c, e in counters.items()],
        *[
            F.when(keep, F.col(f"older_{c}")).when(known, F.col("_older")[c]).alias(f"older_{c}")
            for c in OLDER_FIELDS
        ],
        "_had",
        "_known",
        "_n_arrived",
        _size(new).alias("_n_unique"),
        _size("_fresh").alias("_n_new"),
        (F.coalesce(F.col("n_events"), F.lit(0)) + _size("_fresh")).alias("_n_all"),
        F.when(keep, F.col("n_events")).otherwise(n).alias("_n_within"),
    )


def merge_stats() -> list[Column]:
    """Aggregates over `merge`'s output for the run summary (one pass, via Observation)."""
    had, new, n = F.col("_had"), F.col("_n_new"), F.col("n_events")

    def count(cond: Column) -> Column:
        return F.sum(F.when(cond, 1).otherwise(0)).cast("long")

    return [
        count(~had & (n > 0)).alias("profiles_created"),
        count(had & (new > 0) & (n > 0)).alias("profiles_updated"),
        count(had & (new == 0) & (n > 0)).alias("profiles_unchanged"),
        count(n == 0).alias("profiles_dropped"),
        F.sum(F.col("_n_arrived") - F.col("_n_unique"))
        .cast("long")
        .alias("duplicates_within_input"),
        F.sum(F.col("_n_unique") - new).cast("long").alias("duplicates_of_snapshot"),
        F.sum(F.col("_n_all") - F.col("_n_within")).cast("long").alias("events_expired"),
        F.sum(F.col("_n_within") - n).cast("long").alias("events_truncated"),
        count(n > 0).alias("snapshot_profiles"),
        count((n > 0) & ~F.col("_known")).alias("profiles_counters_unknown"),
        F.sum(n).cast("long").alias("snapshot_events"),
    ]


def finish(merged: DataFrame) -> DataFrame:
    """`merge`'s output -> the histories contract: non-empty histories, public columns only."""
    return merged.filter(F.col("n_events") > 0).select(*HISTORY_COLUMNS)


def build_histories(
    events: DataFrame, previous: DataFrame | None, day: dt.date, cfg: Config
) -> DataFrame:
    """Good events (+ previous snapshot) -> the snapshot of `day` (unordered rows)."""
    return finish(merge(events.filter(F.col("reason").isNull()), previous, day, cfg))
