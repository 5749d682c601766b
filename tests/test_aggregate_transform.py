"""The aggregation's pure transforms on tiny hand-made DataFrames (shared Spark session)."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest
from _histories_data import check, event
from pyspark.sql import functions as F

from propensity.hashing import xxhash64
from propensity.histories import transform
from propensity.histories.schema import COUNTER_COLUMNS, HISTORY_COLUMNS, REASONS
from propensity.pseudonym import pseudonym_column, pseudonymise

DAY = dt.date(2026, 1, 10)
KEY = b"test-key"


def lines_df(spark, lines, day=DAY):
    rows = [(line, f"file:///events/dt={day}/part-00000.jsonl", day) for line in lines]
    return spark.createDataFrame(rows, "raw string, source_file string, src_day date")


def checked(spark, cfg, lines, day=DAY):
    """The validated events, persisted as the job persists them (`job.validate`): the plans
    under test then start where the job's do. Without that barrier Spark 3.5's constraint
    propagation (SPARK-33152) re-derives the constraints of validation's big expressions for
    every alias of merge's projections: one test's optimizing took 171 s there (C1 JIT, 62 s
    with C2), 11 s on 4.x; the job's own plan (persisted events, D-1 from Parquet) is not hit."""
    return transform.validate(
        transform.fields_from_json(lines_df(spark, lines, day), cfg), cfg, KEY
    ).persist()


def test_pseudonymise_spark_and_python_agree(spark):
    ids = ["p0000001", "ünïcödé-id", "x" * 300, ""]
    for key in (b"k", b"K" * 100):  # short key, and one longer than the HMAC block (hashed first)
        df = spark.createDataFrame([(i,) for i in ids], "raw string")
        got = [r[0] for r in df.select(pseudonym_column(F.col("raw"), key)).collect()]
        assert got == pseudonymise(ids, key)
        assert got == pseudonymise(pa.array(ids), key)
        assert all(len(g) == 32 and g == g.lower() for g in got)
    assert pseudonymise(["a"], b"k1") != pseudonymise(["a"], b"k2")
    assert pseudonymise([None, "a"], b"k")[0] is None


def test_python_xxhash64_matches_spark(spark):
    texts = ["abc", "a1", "a0000014", "trousers", "x" * 31, "y" * 32, "z" * 77, "größe", "1234567"]
    df = spark.createDataFrame([(t,) for t in texts], "t string")
    got = [r[0] for r in df.select(F.xxhash64("t")).collect()]
    assert got == [xxhash64(t) for t in texts]


# Each malformed kind (and the variants the generator produces), with the reason expected.
MALFORMED = [
    ('{"event_id":"e1","profile_id":"p1","ts":"2026-01-10T10:0', "invalid_json"),
    ("", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    (event("p1", "2026-01-10T10:00:00Z", article_id="a" * 600), "oversize_field"),
    (event(None, "2026-01-10T10:00:00Z"), "missing_profile_id"),
    ('{"profile_id":null,"ts":"2026-01-10T10:00:00Z","event_type":"view"}', "missing_profile_id"),
    (event("p1", None), "missing_ts"),
    (event("p1", "2026-01-10T10:00:00Z", etype=None), "missing_event_type"),
    ('{"profile_id":{"id":"p1"},"ts":"2026-01-10T10:00:00Z","event_type":"view"}', "wrong_type"),
    ('{"profile_id":1,"ts":"2026-01-10T10:00:00Z","event_type":"view"}', "wrong_type"),
    (event("p1", "2026-01-10T10:00:00Z", price="abc"), "wrong_type"),
    (event("p1", "2026-01-10T10:00:00Z", price="9.5"), "wrong_type"),
    (event("p1", "yesterday"), "bad_ts"),
    (event("p1", ""), "missing_ts"),
    (event("p1", "2026-13-45T25:61:00Z"), "bad_ts"),
    (event("p1", "2026-02-30T10:00:00+01:00"), "bad_ts"),
    (event("p1", "1700000000000abc"), "bad_ts"),
    (event("p1", "2026-01-10T10:00:00"), "bad_ts"),  # no zone: ambiguous
    (event("p1", "1970-03-01T00:00:00.000+00:00"), "ts_too_old"),
    (event("p1", "2025-07-14T23:59:59.999Z"), "ts_too_old"),  # 1 ms before the 180-day window
    (event("p1", "2029-01-10T00:00:00.000+00:00"), "ts_in_future"),
    (event("p1", "2026-01-12T00:00:00.001Z"), "ts_in_future"),  # 1 ms beyond the 24 h tolerance
    (event("p1", "2026-01-10T10:00:00Z", price=-1), "bad_price"),
    (event("p1", "2026-01-10T10:00:00Z", price=2e6), "bad_price"),
]
GOOD = [
    event(
        "p1",
        "2026-01-10T10:00:00.123+01:00",
        eid="e1",
        article_id="a1",
        brand="b",
        category="c",
        price=9.5,
    ),
    event("p1", 1768039200000, etype="order", eid="e2"),
    event(
        "p2", "2026-01-12T00:00:00.000Z", etype="page_ping"
    ),  # at the tolerance: kept; unknown type
    event("p2", "2025-07-15T00:00:00Z", etype="view"),  # first day of the 180-day window
]


def test_validate_quarantines_each_malformed_kind(spark, config):
    rows = checked(spark, config, [line for line, _ in MALFORMED] + GOOD).collect()
    reasons = [r["reason"] for r in rows]
    assert reasons == [reason for _, reason in MALFORMED] + [None] * len(GOOD)
    assert set(reasons) - {None} == set(REASONS)
    # The raw text is kept for bad records only; good ones carry the cleaned event.
    assert [r["raw"] for r in rows[: len(MALFORMED)]] == [line for line, _ in MALFORMED]
    good = rows[len(MALFORMED) :]
    assert all(r["raw"] is None for r in good)
    # The oracle's validation agrees record by record.
    assert [check(line, DAY, config)[0] for line, _ in MALFORMED] == [r for _, r in MALFORMED]


def test_validate_cleans_good_records(spark, config):
    rows = checked(spark, config, GOOD).collect()
    utc = dt.UTC
    first = rows[0]
    assert first["profile_id"] == pseudonymise(["p1"], KEY)[0]
    assert first["ts"].replace(tzinfo=utc) == dt.datetime(2026, 1, 10, 9, 0, 0, 123000, tzinfo=utc)
    assert (first["article"], first["brand"], first["price"]) == (
        xxhash64("a1"),
        xxhash64("b"),
        9.5,
    )
    assert first["event_key"] == xxhash64("id:e1")
    assert rows[1]["ts"].replace(tzinfo=utc) == dt.datetime(2026, 1, 10, 10, 0, tzinfo=utc)
    assert rows[1]["article"] is None and rows[1]["price"] is None
    assert [r["event_type"] for r in rows] == ["view", "order", "other", "view"]
    assert [r["unknown_type"] for r in rows] == [False, False, True, False]
    # Without an event_id the key is built from ts, type and article.
    assert rows[2]["event_key"] == xxhash64(f"ev|{1768176000000}|page_ping|")


def test_parquet_rows_are_validated_like_json(spark, config):
    df = spark.createDataFrame(
        [
            ("e1", "p1", dt.datetime(2026, 1, 10, 8, 0), "view", 3, 1.5),
            ("e2", "p2", None, "view", None, None),
        ],
        "event_id string, profile_id string, ts timestamp, event_type string, article_id int, price double",
    )
    df = df.withColumn("source_file", F.lit("x.parquet")).withColumn("src_day", F.lit(DAY))
    rows = transform.validate(transform.fields_from_parquet(df, config), config, KEY).collect()
    # A number where a text field belongs is a wrong type; a typed timestamp is an instant.
    assert [r["reason"] for r in rows] == ["wrong_type", "missing_ts"]
    assert json.loads(rows[0]["raw"])["profile_id"] == "p1"


def stored(snapshot):
    """A snapshot as the next day's merge gets it: its rows, not the plan that made them (the
    job reads D-1 from Parquet), so that chained merges do not optimize one stacked plan."""
    return snapshot.localCheckpoint()


def build(spark, cfg, lines, previous=None, day=DAY):
    """The snapshot of `day` from `lines` (+ previous), stored."""
    return stored(transform.build_histories(checked(spark, cfg, lines, day), previous, day, cfg))


def test_history_is_sorted_truncated_and_within_retention(spark, tmp_path):
    from conftest import make_config

    cfg = make_config(tmp_path, "histories.max_events=3", "histories.retention_days=2")
    lines = [
        event("p1", "2026-01-10T12:00:00Z", eid="c"),
        event("p1", "2026-01-10T08:00:00Z", eid="b", etype="order"),
        event("p1", "2026-01-09T00:00:00Z", eid="a"),  # first instant of the 2-day window
        event("p1", "2026-01-10T12:00:00Z", eid="d"),  # same instant as "c": the key breaks the tie
        event("p2", "2026-01-09T06:00:00Z", eid="x"),
    ]
    rows = sorted(build(spark, cfg, lines).collect(), key=lambda r: r["n_events"])
    assert [r["n_events"] for r in rows] == [1, 3]
    p1 = rows[1]
    order = sorted(["c", "d"], key=lambda e: xxhash64(f"id:{e}"))
    assert p1["event_key"] == [xxhash64(f"id:{e}") for e in ["b", *order]]  # the last 3
    assert (
        p1["ts"] == sorted(p1["ts"])
        and p1["first_ts"] == p1["ts"][0]
        and p1["last_ts"] == p1["ts"][-1]
    )
    assert p1["event_type"][0] == "order"
    assert list(rows[0].asDict()) == HISTORY_COLUMNS
    # A day later the window moves on: p2's only event (Jan 9) expires and the profile drops out.
    prev = build(spark, cfg, lines)
    later = transform.build_histories(
        checked(spark, cfg, [], dt.date(2026, 1, 11)), prev, dt.date(2026, 1, 11), cfg
    )
    rows = later.collect()
    assert len(rows) == 1 and rows[0]["n_events"] == 3


def test_duplicates_within_and_across_days_and_late_events(spark, config):
    day1 = [
        event("p1", "2026-01-10T10:00:00Z", eid="e1", price=1.0),
        event("p1", "2026-01-10T10:00:00Z", eid="e1", price=1.0),  # redelivered the same day
        event("p1", "2026-01-10T11:00:00Z", article_id="a"),  # no id: keyed by ts/type/article
        event("p1", "2026-01-10T11:00:00Z", article_id="a"),
        event("p1", "2026-01-10T11:00:00Z", article_id="b"),  # another article: not a duplicate
    ]
    prev = build(spark, config, day1)
    (row,) = prev.collect()
    assert row["n_events"] == 3
    day2 = [
        event("p1", "2026-01-10T10:00:00Z", eid="e1", price=1.0),  # redelivered a day later
        event("p1", "2026-01-09T23:00:00Z", eid="late"),  # late: belongs before everything
        event("p2", "2026-01-11T01:00:00Z", eid="new"),
    ]
    day = DAY + dt.timedelta(days=1)
    merged = transform.merge(
        checked(spark, config, day2, day).filter("reason IS NULL"), prev, day, config
    )
    stats = merged.agg(*transform.merge_stats()).collect()[0].asDict()
    assert stats["duplicates_of_snapshot"] == 1 and stats["duplicates_within_input"] == 0
    assert (stats["profiles_created"], stats["profiles_updated"]) == (1, 1)
    rows = {r["n_events"]: r for r in transform.finish(merged).collect()}
    p1 = rows[4]
    assert p1["event_key"][0] == xxhash64("id:late")
    assert p1["event_key"].count(xxhash64("id:e1")) == 1
    assert p1["ts"] == sorted(p1["ts"])
    assert rows[1]["event_key"] == [xxhash64("id:new")]


@pytest.mark.parametrize("tolerance", [0, 48])
def test_future_tolerance_is_configurable(spark, tmp_path, tolerance):
    from conftest import make_config

    cfg = make_config(tmp_path, f"events.future_tolerance_hours={tolerance}")
    rows = checked(spark, cfg, [event("p1", "2026-01-11T12:00:00Z")]).collect()
    assert rows[0]["reason"] == ("ts_in_future" if tolerance == 0 else None)


def _at(text: str) -> float:
    """Epoch seconds of an ISO time (Spark collects timestamps as naive local datetimes)."""
    return dt.datetime.fromisoformat(text).timestamp()


def test_counters_keep_what_the_lists_cut(spark, tmp_path):
    """Orders that max_events cut from the lists still count (events, days, last time, value);
    a redelivery of a cut order does not count twice, a late one counts on its own day, and
    the counters forget what expires from the window."""
    from conftest import make_config

    cfg = make_config(tmp_path, "histories.max_events=2", "histories.retention_days=3")
    d1, d2, d3 = DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)
    day1 = [
        event("p1", "2026-01-10T08:00:00Z", eid="o1", etype="order", price=10.0),
        event("p1", "2026-01-10T09:00:00Z", eid="o2", etype="order", price=2.5),
        event("p1", "2026-01-10T10:00:00Z", eid="o3", etype="order"),  # no price: counts 0
    ]
    s1 = build(spark, cfg, day1, day=d1)
    day2 = [
        event("p1", "2026-01-11T08:00:00Z", eid="v1"),
        event("p1", "2026-01-11T09:00:00Z", eid="v2"),
        event("p1", "2026-01-10T08:00:00Z", eid="o1", etype="order", price=10.0),  # redelivered
        event("p1", "2026-01-09T08:00:00Z", eid="o0", etype="order", price=4.0),  # late
    ]
    merged = transform.merge(checked(spark, cfg, day2, d2).filter("reason IS NULL"), s1, d2, cfg)
    stats = merged.agg(*transform.merge_stats()).collect()[0].asDict()
    assert stats["duplicates_of_snapshot"] == 1 and stats["profiles_counters_unknown"] == 0
    (row,) = transform.finish(merged).collect()
    # Every order has left the lists (two views are newer) ...
    assert row["event_type"] == ["view", "view"]
    assert row["older_event_key"] == [xxhash64(f"id:o{i}") for i in range(4)]
    # ... and the counters still hold them, the late one on its own day.
    counts = dict(zip(row["counter_types"], zip(row["type_events"], row["type_days"])))
    assert counts == {"order": (4, 2), "view": (2, 1)}
    last = {t: x.timestamp() for t, x in zip(row["counter_types"], row["type_last_ts"])}
    assert last == {"order": _at("2026-01-10T10:00:00Z"), "view": _at("2026-01-11T09:00:00Z")}
    assert row["order_value"] == 16.5
    assert row["first_seen"].timestamp() == _at("2026-01-09T08:00:00Z")
    assert row["first_ts"] > row["first_seen"]
    # A day later the late order (Jan 9) leaves the 3-day window, the rest stays.
    later = transform.finish(
        transform.merge(
            checked(spark, cfg, [], d3).filter("reason IS NULL"),
            stored(transform.finish(merged)),
            d3,
            cfg,
        )
    ).collect()[0]
    assert dict(zip(later["counter_types"], later["type_events"])) == {"order": 3, "view": 2}
    assert later["order_value"] == 12.5 and later["first_seen"].timestamp() == _at(
        "2026-01-10T08:00:00Z"
    )


def test_snapshot_without_counters_keeps_them_unknown(spark, config):
    """A version-1 snapshot (no counter columns) merges: its profiles' counters stay unknown
    (null), a new profile's are known."""
    s1 = build(spark, config, [event("p1", "2026-01-10T08:00:00Z", eid="a")])
    v1 = s1.drop(*COUNTER_COLUMNS)
    day = DAY + dt.timedelta(days=1)
    lines = [event("p1", "2026-01-11T08:00:00Z", eid="b"), event("p2", "2026-01-11T08:00:00Z")]
    merged = transform.merge(
        checked(spark, config, lines, day).filter("reason IS NULL"), v1, day, config
    )
    assert merged.agg(*transform.merge_stats()).collect()[0]["profiles_counters_unknown"] == 1
    rows = sorted(transform.finish(merged).collect(), key=lambda r: r["n_events"])
    assert [r["n_events"] for r in rows] == [1, 2]
    new, old = rows
    assert new["counter_types"] == ["view"] and new["type_events"] == [1] and new["older_ts"] == []
    assert all(old[c] is None for c in COUNTER_COLUMNS)
