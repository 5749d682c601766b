"""`propensity generate`: contract of the files, realism of the stream, truth, determinism."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import pathlib

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from _events_data import classify, parse_ts, partition_lines, partition_rows
from conftest import make_config
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.config import DEFAULT_VOCABULARY, EventFields
from propensity.events import behaviour as bm
from propensity.events.catalogue import CATEGORIES
from propensity.events.generate import World, generate_stream, part_name
from propensity.events.malformed import JSON_KINDS, PARQUET_KINDS
from propensity.events.render import EVENT_TYPES, TS_EPOCH_MS, TS_ZONE_MINUTES, TS_ZONES, Renderer

START = dt.date(2026, 3, 2)  # a Monday
DAYS = 21
BAD_SHARE = 0.04
VOCABULARY = set(DEFAULT_VOCABULARY)


def day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """One seeded JSON-lines run (3000 profiles, 3 weeks, 4% malformed), read back whole."""
    out = str(tmp_path_factory.mktemp("stream") / "events")
    summary = generate_stream(out, START, DAYS, 3000, seed=11, bad_share=BAD_SHARE)
    good, bad = [], []  # good: (partition day, record)
    for i in range(DAYS):
        for line in partition_lines(out, day(i)):
            (bad if classify(line, day(i)) else good).append((day(i), line))
    records = [(d, json.loads(line)) for d, line in good]
    return {
        "out": out,
        "summary": summary,
        "records": records,
        "bad": bad,
        "n_lines": len(good) + len(bad),
    }


def files_of(root: str) -> dict[str, bytes]:
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = pathlib.Path(path).read_bytes()
    return found


def on_time(stream):
    """(timestamp, record) of every valid record delivered on its own day, each event once."""
    seen, out = set(), []
    for d, r in stream["records"]:
        ts = parse_ts(r["ts"])
        if ts.date() == d and r["event_id"] not in seen:
            seen.add(r["event_id"])
            out.append((ts, r))
    return out


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path, fmt):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_stream(str(tmp_path / name), START, 3, 400, seed=seed, fmt=fmt, bad_share=0.05)
        runs[name] = files_of(str(tmp_path / name))
    assert runs["a"] == runs["b"]
    assert sorted(runs["a"]) == sorted(runs["c"])
    part = f"dt=2026-03-03/{part_name(0, fmt)}"
    assert runs["a"][part] != runs["c"][part]


def test_layout_markers_and_truth_files(stream):
    out = stream["out"]
    assert storage.list_partitions(out) == [day(i) for i in range(DAYS)]  # _truth is not listed
    for i in range(DAYS):
        part = storage.partition(out, day(i))
        assert storage.list_files(part) == [storage.join(part, "part-00000.jsonl.gz")]
        assert storage.is_complete(part)
    truth = storage.join(out, "_truth")
    assert storage.list_partitions(truth) == [day(i) for i in range(DAYS)]
    meta = storage.read_json(storage.join(truth, "generator.json"))
    assert meta["seed"] == 11 and meta["profiles"] == 3000 and meta["days"] == DAYS
    assert meta["truth_columns"] == {"p_order_7d": 7}


def test_records_follow_the_raw_event_contract(stream):
    formats = collections.Counter()
    for d, r in stream["records"]:
        assert isinstance(r["event_id"], str) and r["profile_id"].startswith("p")
        assert isinstance(r["event_type"], str)
        if isinstance(r["ts"], int):
            formats["epoch_ms"] += 1
        else:
            formats[r["ts"][23:]] += 1  # the zone after YYYY-MM-DDTHH:MM:SS.mmm
        has_article = r["event_type"] not in ("search", "page_ping")
        assert ("article_id" in r) == has_article and ("brand" in r) == has_article
        assert ("category" in r) == has_article
        priced = has_article and r["event_type"] != "wishlist"
        assert ("price" in r) == priced
        if priced:
            assert isinstance(r["price"], float) and r["price"] > 0
    assert set(formats) == {"epoch_ms", "Z", "+00:00", "+01:00", "+02:00", "-05:00"}
    assert 0.05 < formats["epoch_ms"] / sum(formats.values()) < 0.2


def test_most_records_of_a_partition_are_that_day(stream):
    days = collections.Counter(parse_ts(r["ts"]).date() == d for d, r in stream["records"])
    assert days[False] / sum(days.values()) < 0.02  # late ones only
    for d, r in stream["records"]:
        ts = parse_ts(r["ts"]).date()
        assert d - dt.timedelta(days=3) <= ts <= d


def test_late_events_and_duplicates_occur(stream):
    late = [r for d, r in stream["records"] if parse_ts(r["ts"]).date() < d]
    assert len(late) > 20
    where = collections.defaultdict(list)
    for d, r in stream["records"]:
        where[r["event_id"]].append(d)
    twice = [days for days in where.values() if len(days) > 1]
    assert any(a == b for a, b in twice), "no same-day redelivery"
    assert any(a != b for a, b in twice), "no next-day redelivery"
    assert len(twice) / len(where) < 0.01
    copies = collections.defaultdict(set)
    for _, r in stream["records"]:
        copies[r["event_id"]].add(json.dumps(r, sort_keys=True))
    assert all(len(v) == 1 for v in copies.values()), "a redelivered event changed content"


def test_activity_is_heavy_tailed(stream):
    per_profile = collections.Counter(r["profile_id"] for _, r in on_time(stream))
    counts = np.sort(np.array(list(per_profile.values())))[::-1]
    top = counts[: len(counts) // 10].sum() / counts.sum()
    assert top > 0.4
    assert np.median(counts) <= 15
    assert counts.max() >= 200


def test_daily_and_weekly_seasonality(stream):
    events = on_time(stream)
    hours = collections.Counter(ts.hour for ts, _ in events)
    evening = sum(hours[h] for h in (18, 19, 20, 21)) / 4
    night = sum(hours[h] for h in (3, 4)) / 2
    assert evening > 5 * night
    per_day = collections.Counter(ts.date() for ts, _ in events)
    # Each Sunday against its Saturday and the Monday after (trend-free neighbours).
    for sunday in (day(6), day(13)):
        neighbours = (
            per_day[sunday - dt.timedelta(days=1)] + per_day[sunday + dt.timedelta(days=1)]
        ) / 2
        assert per_day[sunday] > 1.1 * neighbours


def test_event_mix(stream):
    types = collections.Counter(r["event_type"] for _, r in on_time(stream))
    assert VOCABULARY <= set(types)
    assert types.most_common(1)[0][0] == "view"
    assert types["order"] < types["add_to_cart"] < types["view"]
    assert types["return"] < types["order"] * 2
    assert 0 < types["page_ping"] / sum(types.values()) < 0.05  # unknown type, valid record


def test_bad_share_injects_every_kind_about_equally(stream):
    n_bad = len(stream["bad"])
    assert abs(n_bad / stream["n_lines"] - BAD_SHARE) < 0.005
    kinds = collections.Counter(classify(line, d) for d, line in stream["bad"])
    assert set(kinds) == set(JSON_KINDS)
    assert min(kinds.values()) > 0.7 * n_bad / len(JSON_KINDS)
    # Injected copies carry their own ids: dropping them leaves the valid stream untouched.
    assert not any(r["event_id"].endswith("-bad") for _, r in stream["records"])
    per_day = stream["summary"].bad
    assert sum(per_day) == n_bad


def test_malformed_records_are_added_without_changing_the_valid_stream(tmp_path):
    clean, dirty = str(tmp_path / "clean"), str(tmp_path / "dirty")
    generate_stream(clean, START, 3, 500, seed=8)
    generate_stream(dirty, START, 3, 500, seed=8, bad_share=0.2)
    for i in range(3):
        lines = partition_lines(dirty, day(i))
        kept = [line for line in lines if not classify(line, day(i))]
        assert len(kept) < 0.9 * len(lines)
        assert kept == partition_lines(clean, day(i))


def test_parquet_holds_the_kinds_a_schema_can(tmp_path):
    out = str(tmp_path / "events")
    generate_stream(out, START, 4, 800, seed=3, fmt="parquet", bad_share=0.1)
    kinds = collections.Counter()
    for i in range(4):
        files = storage.parquet_files(storage.partition(out, day(i)))
        assert [f.rsplit("/", 1)[1] for f in files] == ["part-00000.parquet"]
        assert pq.read_schema(files[0]).field("price").type == "double"
        for row in partition_rows(out, day(i)):
            kinds[classify(row, day(i))] += 1
    n_bad = sum(v for k, v in kinds.items() if k)
    assert abs(n_bad / sum(kinds.values()) - 0.1) < 0.02
    assert set(kinds) - {None} == set(PARQUET_KINDS)


def test_truth_covers_seen_profiles_with_probabilities(stream):
    out = stream["out"]
    seen = set()
    by_day = collections.defaultdict(set)
    for _, r in stream["records"]:
        by_day[parse_ts(r["ts"]).date()].add(r["profile_id"])
    for i in range(DAYS):
        seen |= by_day[day(i)]
        truth = storage.read_parquet(storage.partition(storage.join(out, "_truth"), day(i)))
        assert truth.column_names == ["profile_id", "p_order_7d", "p_order_7d_observable"]
        ids = truth.column("profile_id").to_pylist()
        assert len(set(ids)) == len(ids) and set(ids) >= seen
        if i < DAYS - 3:  # later, some events are late beyond the last partition: not delivered
            assert set(ids) == seen
        p = truth.column("p_order_7d").to_numpy()
        assert ((p >= 0) & (p <= 1)).all()


def test_truth_predicts_realised_orders(stream):
    out = stream["out"]
    orders = collections.defaultdict(set)  # day -> profiles ordering that day
    for ts, r in on_time(stream):
        if r["event_type"] == "order":
            orders[ts.date()].add(r["profile_id"])
    # Late orders count too: they happened on their day, only their delivery was late.
    for d, r in stream["records"]:
        if r["event_type"] == "order":
            orders[parse_ts(r["ts"]).date()].add(r["profile_id"])
    for i in (7, 10, 13):
        truth = storage.read_parquet(
            storage.partition(storage.join(out, "_truth"), day(i))
        ).to_pydict()
        ahead = set().union(*(orders[day(i + k)] for k in range(1, 8)))
        label = np.array([pid in ahead for pid in truth["profile_id"]])
        assert 0.02 < label.mean() < 0.25  # a realistic share orders within a week
        assert roc_auc_score(label, truth["p_order_7d"]) > 0.65
        # Calibrated: the mean probability matches the realised share.
        assert abs(np.mean(truth["p_order_7d"]) - label.mean()) < 0.04


def test_vectorised_json_lines_match_a_per_record_json_dumps():
    """Oracle: the obvious renderer (a dict per record, datetime, json.dumps) gives the same bytes."""
    world = World(3, 2000, 5)
    pop = world.catalogue.popularity(2)
    ev, _, _ = world.simulate(np.random.default_rng(0), 2, day(2), 0, 2000, pop, 0)
    ev.ts_format[:] = np.arange(len(ev)) % (TS_EPOCH_MS + 1)  # every timestamp form
    lines = Renderer(world.catalogue, world.profile_ids, EventFields()).json_lines(ev)
    assert len(ev) > 500
    cat, pids = world.catalogue, world.profile_ids.to_pylist()
    for i, line in enumerate(lines.to_pylist()):
        etype, fmt = EVENT_TYPES[ev.etype[i]], int(ev.ts_format[i])
        if fmt == TS_EPOCH_MS:
            ts = int(ev.ts[i])
        else:
            offset = dt.timezone(dt.timedelta(minutes=int(TS_ZONE_MINUTES[fmt])))
            ts = dt.datetime.fromtimestamp(ev.ts[i] / 1000, offset).isoformat(
                timespec="milliseconds"
            )
            ts = ts[:23] + TS_ZONES[fmt]
        record = {"event_id": f"e{ev.event_id[i]}", "profile_id": pids[ev.profile[i]], "ts": ts}
        record["event_type"] = etype
        a = int(ev.article[i])
        if etype not in ("search", "page_ping"):
            record["article_id"] = cat.article_ids[a].as_py()
            record["brand"] = cat.brand_ids[int(cat.brand[a])].as_py()
            record["category"] = CATEGORIES[cat.category[a]]
            if etype != "wishlist":
                record["price"] = float(cat.price[a])
        assert line == json.dumps(record, separators=(",", ":"))


def test_order_probability_matches_a_simulated_chain():
    """Oracle: simulate the planted chain and compare with the exact backward recursion."""
    rng = np.random.default_rng(0)
    n = 200_000
    for state, ordered, affinity, weekday in (
        (1, False, 1.0, 0),
        (3, False, 2.0, 5),
        (3, True, 0.5, 6),
    ):
        exact = bm.order_probability(
            np.array([state]), np.array([ordered]), np.array([affinity]), weekday, 7
        )[0]
        s = np.full(n, state)
        probs = bm.next_state_probs(s, np.full(n, ordered))
        s = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
        any_order = np.zeros(n, bool)
        for k in range(7):
            q = bm.order_hazard(np.full(n, affinity), (weekday + k) % 7)[np.arange(n), s]
            o = rng.random(n) < q
            any_order |= o
            probs = bm.next_state_probs(s, o)
            s = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
        assert abs(any_order.mean() - exact) < 0.005, (state, ordered, affinity)


def test_rerun_replaces_a_day_whole(tmp_path):
    out = str(tmp_path / "events")
    generate_stream(out, START, 2, 300, seed=1)
    before = files_of(out)
    stale = storage.join(storage.partition(out, START), "part-00007.jsonl.gz")
    storage.write_bytes(stale, b"stale")
    generate_stream(out, START, 2, 300, seed=1)
    assert not storage.exists(stale)
    assert files_of(out) == before


def test_field_names_follow_the_config(tmp_path):
    cfg = make_config(tmp_path, "events.fields.profile_id=visitor", "events.fields.ts=timestamp")
    out = str(tmp_path / "events")
    generate_stream(out, START, 1, 200, seed=2, fields=cfg.events.fields)
    record = json.loads(partition_lines(out, START)[0])
    assert {"visitor", "timestamp"} <= set(record) and "profile_id" not in record


def test_writes_to_s3(s3_bucket):
    out = f"s3://{s3_bucket}/stream/events"
    generate_stream(out, START, 2, 300, seed=4, bad_share=0.02)
    assert storage.list_partitions(out) == [day(0), day(1)]
    lines = partition_lines(out, day(1))
    assert len(lines) > 100 and any(classify(line, day(1)) for line in lines)
    truth = storage.read_parquet(storage.partition(f"{out}/_truth", day(1)))
    assert truth.num_rows > 0
    assert storage.read_json(f"{out}/_truth/generator.json")["seed"] == 4


def test_s3_objects_are_the_local_bytes(s3_bucket, tmp_path):
    out = f"s3://{s3_bucket}/stream/events"
    generate_stream(out, START, 2, 300, seed=4)
    local = str(tmp_path / "events")
    generate_stream(local, START, 2, 300, seed=4)
    key = "stream/events/dt=2026-03-03/part-00000.jsonl.gz"
    raw = boto3.client("s3").get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert raw == files_of(local)["dt=2026-03-03/part-00000.jsonl.gz"]


def test_cli_generates_and_rejects_bad_options(tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "events")
    common = ["generate", "--start", "2026-03-02", "--days", "2", "--profiles", "200", "--out", out]
    result = runner.invoke(app, [*common, "--format", "parquet", "--seed", "9"])
    assert result.exit_code == 0, result.output
    assert "total records" in result.output
    assert storage.list_partitions(out) == [day(0), day(1)]
    assert storage.list_files(storage.partition(out, day(0)))[0].endswith("part-00000.parquet")
    for bad, word in ((["--bad-share", "0.7"], "--bad-share"), (["--format", "csv"], "--format")):
        result = runner.invoke(app, [*common, *bad])
        assert result.exit_code == 2 and word in result.output
    result = runner.invoke(app, [*common[:2], "2026-13-01", *common[3:]])
    assert result.exit_code == 2 and "--start" in result.output


def test_cli_defaults_to_the_configs_events_location(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--start",
            "2026-03-02",
            "--days",
            "1",
            "--profiles",
            "100",
            "--set",
            f"storage.root={tmp_path}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert storage.list_partitions(str(tmp_path / "events")) == [day(0)]


def test_truth_has_a_column_per_order_target(tmp_path):
    targets = (
        "targets=[{name: order_7d, event_types: [order], horizon_days: 7},"
        " {name: order_3d, event_types: [order], horizon_days: 3},"
        " {name: return_14d, event_types: [return], horizon_days: 14}]"
    )
    out = str(tmp_path / "events")
    result = CliRunner().invoke(
        app,
        ["generate", "--start", "2026-03-02", "--days", "2", "--profiles", "300"]
        + ["--out", out, "--set", targets],
    )
    assert result.exit_code == 0, result.output
    truth = storage.read_parquet(storage.partition(f"{out}/_truth", day(1)))
    assert truth.column_names == [
        "profile_id", "p_order_7d", "p_order_3d", "p_order_7d_observable", "p_order_3d_observable"
    ]  # fmt: skip
    p3, p7 = truth.column("p_order_3d").to_numpy(), truth.column("p_order_7d").to_numpy()
    assert (p3 <= p7 + 1e-12).all() and (p3 < p7).mean() > 0.99  # a shorter horizon, less likely
