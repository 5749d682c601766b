"""`aggregate` end to end on real files: the incremental chain, --full, re-runs, failures, CLI."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from _histories_data import check, event, oracle, read_raw, snapshot_rows, write_day
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.errors import BadInput, MissingInput
from propensity.events.generate import generate_stream
from propensity.histories.job import run
from propensity.histories.schema import COUNTER_COLUMNS, HISTORY_SCHEMA, SUMMARY_NAME

START = dt.date(2026, 1, 1)
DAYS = [START + dt.timedelta(days=i) for i in range(4)]
RAW_ID = re.compile(r"p\d{7}")  # the generator's raw profile ids


@pytest.fixture(scope="module")
def chain(spark, tmp_path_factory):
    """Five generated days (late, duplicate, unknown-type and malformed records) aggregated as
    a chain: bootstrap on the first day, then incremental. Short retention and history cap so
    that expiry and truncation happen."""
    root = tmp_path_factory.mktemp("chain")
    cfg = make_config(
        root, "histories.max_events=12", "histories.retention_days=3", "events.max_bad_share=0.2"
    )
    gen = generate_stream(cfg.uri("events"), START, len(DAYS), 150, seed=3, bad_share=0.03)
    # A second file in a partition: events of the day before, delivered again.
    again = read_raw(cfg, [DAYS[1]])[DAYS[1]][:40:4]
    storage.write_bytes(
        storage.join(storage.partition(cfg.uri("events"), DAYS[2]), "part-00099.jsonl"),
        ("\n".join(again) + "\n").encode(),
    )
    summaries = [run(spark, cfg, DAYS[0], "bootstrap")]
    summaries += [run(spark, cfg, d) for d in DAYS[1:]]
    return cfg, gen, summaries


@pytest.mark.slow
def test_chain_matches_oracle_and_full_rebuild(spark, chain, caplog):
    cfg, gen, summaries = chain
    key = cfg.pseudonym_key()
    raw = read_raw(cfg, DAYS)
    last = DAYS[-1]
    incremental = snapshot_rows(cfg, last)
    assert incremental == oracle(cfg, key, raw, last)
    # The planted anomalies were really there, and retention and the cap really cut.
    assert gen.late > 0 and gen.duplicates > 0
    assert sum(s["duplicates_of_snapshot"] for s in summaries) > 0
    assert sum(s["events_expired"] for s in summaries) > 0
    assert sum(s["events_truncated"] for s in summaries) > 0
    assert max(r["n_events"] for r in incremental) == 12
    # The counters cover events the lists cut (the oracle counts the whole window).
    assert any(r["older_ts"] for r in incremental)
    assert any(sum(r["type_events"]) > r["n_events"] for r in incremental)
    assert sum(s["profiles_counters_unknown"] for s in summaries) == 0
    # --full from the raw window gives the same rows.
    with caplog.at_level(logging.INFO):
        full = run(spark, cfg, last, "full")
    assert full["mode"] == "full" and len(full["input_partitions"]) == 4
    assert snapshot_rows(cfg, last) == incremental
    assert not RAW_ID.search(caplog.text)
    # Re-running the day replaces the partition cleanly: same rows (a leftover file of the
    # runs before would add duplicate profiles).
    run(spark, cfg, last)
    assert snapshot_rows(cfg, last) == incremental


def test_chain_partitions_follow_the_contract(chain):
    cfg, gen, summaries = chain
    raw = read_raw(cfg, DAYS)
    for day, summary in zip(DAYS, summaries):
        part = storage.partition(cfg.uri("histories"), day)
        assert storage.is_complete(part)
        table = storage.read_parquet(part)
        assert table.schema.remove_metadata() == HISTORY_SCHEMA
        assert (
            storage.read_json(storage.join(part, SUMMARY_NAME))["snapshot_profiles"]
            == table.num_rows
        )
        ids = table.column("profile_id").to_pylist()
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == len(ids)
        # Quarantine: the reasons per record of an independent classifier, counted the same.
        expected = Counter(check(line, day, cfg)[0] for line in raw[day])
        expected.pop(None)
        assert summary["quarantined"] == dict(expected)
        q = storage.read_parquet(storage.partition(cfg.uri("quarantine"), day))
        assert Counter(q.column("reason").to_pylist()) == expected
        assert set(q.column("raw").to_pylist()) <= set(raw[day])
        assert all(f"dt={day}" in s for s in q.column("source_file").to_pylist())
        assert summary["events_read"] == len(raw[day])
    kinds = set().union(*(s["quarantined"] for s in summaries))
    assert set(gen.bad_kinds) - {"absurd_ts"} <= kinds
    assert kinds & {"ts_too_old", "ts_in_future"}  # the generator's absurd_ts, split by side
    assert sum(s["unknown_event_types"] for s in summaries) > 0


def test_summary_counts_do_not_depend_on_ansi_mode(spark, tmp_path):
    """Without ANSI mode (Spark 3.5's default) size(NULL) is -1: the counts of profiles without
    new events must not read it. Same summary either way, and as the snapshots say."""
    d0, d1 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)
    cutoff = dt.datetime(2026, 1, 4, tzinfo=dt.UTC)  # D1's 3-day window starts here
    day0 = [
        event("p1", "2026-01-05T10:00:00Z", eid="a"),  # nothing on D1, inside the window: as is
        event("p2", "2026-01-03T10:00:00Z", eid="b"),  # expires on D1, its other event stays
        event("p2", "2026-01-05T10:00:00Z", eid="c"),
        event("p3", "2026-01-03T12:00:00Z", eid="d"),  # its only event expires: dropped
        event("p4", "2026-01-03T08:00:00Z", eid="e"),  # expires, and a new event comes
        event("p6", "2026-01-05T11:00:00Z", eid="f"),
        event("p7", "2026-01-04T11:00:00Z", eid="g"),  # as is
    ]
    day1 = [
        event("p4", "2026-01-06T09:00:00Z", eid="h"),
        event("p5", "2026-01-06T09:00:00Z", eid="i"),  # created
        event("p6", "2026-01-05T11:00:00Z", eid="f"),  # redelivered: unchanged
    ]
    original = spark.conf.get("spark.sql.ansi.enabled")
    summaries, cfgs = {}, {}
    try:
        for ansi in ("false", "true"):
            spark.conf.set("spark.sql.ansi.enabled", ansi)
            cfg = cfgs[ansi] = make_config(tmp_path / f"ansi-{ansi}", "histories.retention_days=3")
            write_day(cfg, str(d0), day0)
            write_day(cfg, str(d1), day1)
            run(spark, cfg, d0, "bootstrap")
            summaries[ansi] = run(spark, cfg, d1)
    finally:
        spark.conf.set("spark.sql.ansi.enabled", original)
    off, on = ({k: v for k, v in s.items() if k != "seconds"} for s in summaries.values())
    assert off == on
    assert all(v >= 0 for v in off.values() if isinstance(v, int))
    # The snapshots are the oracle's, in both modes.
    for cfg in cfgs.values():
        raw = read_raw(cfg, [d0, d1])
        assert snapshot_rows(cfg, d1) == oracle(cfg, cfg.pseudonym_key(), raw, d1)
    # The counts, recomputed from the two snapshots (no truncation here: max_events is large).
    prev, cur = snapshot_rows(cfg, d0), snapshot_rows(cfg, d1)
    before = {r["profile_id"]: set(r["event_key"]) for r in prev}
    after = {r["profile_id"]: set(r["event_key"]) for r in cur}
    unchanged = sum(p in before and keys <= before[p] for p, keys in after.items())
    expired = sum(t < cutoff for r in prev for t in r["ts"])
    assert (unchanged, expired) == (4, 3)  # p1, p2, p6, p7; b, d, e
    assert off["profiles_unchanged"] == unchanged
    assert off["events_expired"] == expired
    assert off["profiles_dropped"] == len(before.keys() - after.keys()) == 1
    assert off["duplicates_of_snapshot"] == 1
    assert (off["profiles_created"], off["profiles_updated"]) == (1, 1)


def test_missing_previous_snapshot_is_a_clear_error(spark, config):
    write_day(config, "2026-01-06", [event("p1", "2026-01-06T10:00:00Z")])
    with pytest.raises(MissingInput, match=r"dt=2026-01-05.*--full.*--bootstrap"):
        run(spark, config, "2026-01-06")
    assert not storage.exists(storage.partition(config.uri("histories"), "2026-01-06"))


def test_unmarked_input_partition_is_refused(spark, config):
    write_day(config, "2026-01-05", [event("p1", "2026-01-05T10:00:00Z")], mark=False)
    with pytest.raises(storage.IncompletePartition, match="dt=2026-01-05"):
        run(spark, config, "2026-01-05", "bootstrap")
    # --full refuses an unmarked partition anywhere in its window, too.
    write_day(config, "2026-01-06", [event("p1", "2026-01-06T10:00:00Z")])
    with pytest.raises(storage.IncompletePartition, match="dt=2026-01-05"):
        run(spark, config, "2026-01-06", "full")


def test_too_many_bad_records_fail_writing_nothing(spark, tmp_path):
    cfg = make_config(tmp_path, "events.max_bad_share=0.3")
    write_day(cfg, "2026-01-05", [event("p1", "2026-01-05T10:00:00Z")])
    run(spark, cfg, "2026-01-05", "bootstrap")
    before = snapshot_rows(cfg, "2026-01-05")
    write_day(cfg, "2026-01-05", [event("p1", "2026-01-05T10:00:00Z"), "{oops", event(None, 5)])
    with pytest.raises(
        BadInput, match=r"dt=2026-01-05: 2 of 3 records.*invalid_json=1.*missing_profile_id=1"
    ):
        run(spark, cfg, "2026-01-05", "bootstrap")
    assert snapshot_rows(cfg, "2026-01-05") == before  # the last good run still stands
    write_day(cfg, "2026-01-06", ["{oops"])
    with pytest.raises(BadInput):
        run(spark, cfg, "2026-01-06")
    assert not storage.exists(storage.partition(cfg.uri("histories"), "2026-01-06"))
    assert not storage.exists(storage.partition(cfg.uri("quarantine"), "2026-01-06"))


def test_failure_mid_run_leaves_no_marker(spark, config):
    write_day(config, "2026-01-05", [event("p1", "2026-01-05T10:00:00Z")])
    write_day(config, "2026-01-06", [event("p1", "2026-01-06T10:00:00Z")])
    run(spark, config, "2026-01-05", "bootstrap")
    # An earlier complete D (any content) that the failed run must not leave looking complete.
    part = storage.partition(config.uri("histories"), "2026-01-06")
    storage.write_parquet(
        storage.read_parquet(storage.partition(config.uri("histories"), "2026-01-05")),
        storage.join(part, "part-0.parquet"),
    )
    storage.mark_complete(part)
    # Break D-1's snapshot (complete but unreadable): the merge fails after validation.
    prev = storage.partition(config.uri("histories"), "2026-01-05")
    for f in storage.list_files(prev, suffix=".parquet"):
        storage.write_bytes(f, b"not parquet")
    with pytest.raises(Exception):  # noqa: B017 - Spark's own error, whatever its class
        run(spark, config, "2026-01-06")
    assert not storage.is_complete(part)
    with pytest.raises(storage.IncompletePartition):
        storage.read_parquet(part)


def test_cli(spark, tmp_path, monkeypatch):
    cfg = make_config(tmp_path)
    root = f"storage.root={tmp_path}"
    runner = CliRunner()
    write_day(cfg, "2026-01-05", [event("p1", "2026-01-05T10:00:00Z"), "not json"])
    r = runner.invoke(app, ["aggregate", "--date", "2026-01-06", "--set", root])
    assert r.exit_code == 3 and "--bootstrap" in r.output
    r = runner.invoke(
        app, ["aggregate", "--date", "2026-01-05", "--full", "--bootstrap", "--set", root]
    )
    assert r.exit_code == 2
    r = runner.invoke(
        app,
        ["aggregate", "--date", "2026-01-05", "--set", root, "--set", "events.max_bad_share=0.1"],
    )
    assert r.exit_code == 3  # D-1 is missing: checked before reading anything
    r = runner.invoke(
        app,
        [
            "aggregate",
            "--date",
            "2026-01-05",
            "--bootstrap",
            "--set",
            root,
            "--set",
            "events.max_bad_share=0.1",
        ],
    )
    assert r.exit_code == 4 and "max_bad_share" in r.output
    r = runner.invoke(
        app,
        [
            "aggregate",
            "--date",
            "2026-01-05",
            "--bootstrap",
            "--set",
            root,
            "--set",
            "events.max_bad_share=0.5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "invalid_json=1" in r.output and "snapshot_profiles" in r.output
    assert len(snapshot_rows(cfg, "2026-01-05")) == 1


def test_version1_snapshot_reads_as_unknown_until_full(spark, tmp_path):
    """The migration: an incremental day on a snapshot written before the counters keeps its
    profiles' counters unknown (their cut events are lost); --full rebuilds them exactly."""
    cfg = make_config(tmp_path, "histories.max_events=2")
    d0, d1 = dt.date(2026, 1, 5), dt.date(2026, 1, 6)
    write_day(
        cfg,
        str(d0),
        [
            event("p1", "2026-01-05T10:00:00Z", eid="a", etype="order", price=3.0),
            event("p1", "2026-01-05T11:00:00Z", eid="b"),
            event("p1", "2026-01-05T12:00:00Z", eid="c"),
        ],
    )
    write_day(
        cfg,
        str(d1),
        [event("p1", "2026-01-06T10:00:00Z", eid="d"), event("p2", "2026-01-06T10:00:00Z")],
    )
    run(spark, cfg, d0, "bootstrap")
    # D0 as a version-1 job wrote it: the same files without the counter columns.
    for f in storage.parquet_files(storage.partition(cfg.uri("histories"), d0)):
        storage.write_parquet(storage.open_parquet(f).read().drop_columns(COUNTER_COLUMNS), f)
        crc = Path(storage.resolve(f)[1]).with_name(f".{Path(f).name}.crc")
        crc.unlink()  # Hadoop's checksum of the file Spark wrote, no longer this file's
    summary = run(spark, cfg, d1)
    assert summary["profiles_counters_unknown"] == 1 and summary["histories_version"] == 2
    rows = snapshot_rows(cfg, d1)
    unknown = [r for r in rows if r["first_seen"] is None]
    assert len(unknown) == 1 and unknown[0]["n_events"] == 2
    assert all(unknown[0][c] is None for c in COUNTER_COLUMNS)
    assert run(spark, cfg, d1, "full")["profiles_counters_unknown"] == 0
    full = snapshot_rows(cfg, d1)
    assert full == oracle(cfg, cfg.pseudonym_key(), read_raw(cfg, [d0, d1]), d1)
    p1 = next(r for r in full if r["n_events"] == 2)
    assert p1["counter_types"] == ["order", "view"] and p1["type_events"] == [1, 3]
    assert p1["order_value"] == 3.0
