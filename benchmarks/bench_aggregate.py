"""Throughput of `propensity aggregate` (Spark, local mode) against DuckDB on the same files.

Run:  .venv/bin/python benchmarks/bench_aggregate.py [--profiles 470000 --days 30] [--dir DIR]

1. generate DAYS of JSON lines (gzip) with `propensity.events` (about 20M events for the
   defaults), timed on its own; kept in DIR when given and reused by a later run;
2. Spark: start-up; `--full` rebuild of the second-to-last day (every partition of the window);
   then the incremental last day on top of it;
3. DuckDB (single machine, all cores): the same aggregation of the last day written directly in
   SQL -- text lines, JSON parsing, the same validation rules, HMAC pseudonyms, dedupe, window,
   last N events per profile as lists -- recomputed from the whole raw window, as a system
   without snapshots would; its rows are checked against Spark's (profile ids and counts);
4. prints one JSON line per measurement and the ratio Spark incremental day / DuckDB full
   recomputation (goal: at most 2), with peak memory (Spark's JVM, DuckDB's process).

Spark and DuckDB run in child processes, one after the other, so their memory peaks are their own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

START = dt.date(2026, 1, 1)


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def spark_child(root: str, last: dt.date, memory: str) -> None:
    from propensity.config import load_config
    from propensity.histories.job import run
    from propensity.spark import spark_session

    cfg = load_config(overrides=[f"storage.root={root}", f"spark.driver_memory={memory}"])
    t = time.perf_counter()
    spark = spark_session(cfg, app_name="bench-aggregate")
    spark.range(1).count()
    emit(stage="spark_startup", seconds=round(time.perf_counter() - t, 1))
    before = last - dt.timedelta(days=1)
    t = time.perf_counter()
    full = run(spark, cfg, before, "full")
    seconds = time.perf_counter() - t
    emit(
        stage="spark_full", day=str(before), seconds=round(seconds, 1),
        events=full["window_events_read"], events_per_s=round(full["window_events_read"] / seconds),
        profiles=full["snapshot_profiles"], snapshot_events=full["snapshot_events"], stages=full["seconds"],
    )  # fmt: skip
    t = time.perf_counter()
    inc = run(spark, cfg, last)
    seconds = time.perf_counter() - t
    emit(
        stage="spark_incremental", day=str(last), seconds=round(seconds, 1), events=inc["events_read"],
        events_per_s=round(inc["events_read"] / seconds), profiles=inc["snapshot_profiles"],
        snapshot_events=inc["snapshot_events"], stages=inc["seconds"],
        created=inc["profiles_created"], updated=inc["profiles_updated"],
    )  # fmt: skip
    with open(f"/proc/{spark.sparkContext._gateway.proc.pid}/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM")).split()[1]
    emit(stage="spark_memory", jvm_peak_mib=int(hwm) // 1024, driver_memory=memory)


def duckdb_sql(cfg, files: list[str], day: dt.date) -> str:
    """The aggregation of `day` from raw lines, in DuckDB SQL (rules of transform.validate)."""
    from propensity.histories import transform
    from propensity.pseudonym import _pads

    ev, f = cfg.events, cfg.events.fields
    ipad, opad = _pads(cfg.pseudonym_key())
    names = {k: getattr(f, k) for k in transform.FIELD_KEYS}
    spec = json.dumps({v: "VARCHAR" for v in names.values()})
    end_ms = (day - dt.date(1970, 1, 1)).days * 86_400_000 + 86_400_000
    cutoff = end_ms - cfg.histories.retention_days * 86_400_000
    vocab = ", ".join(f"'{v}'" for v in ev.vocabulary)
    wrong = transform._wrong_type_pattern(cfg).replace("'", "''")
    file_list = ", ".join(f"'{p}'" for p in files)

    def j(k: str) -> str:
        return f'j."{names[k]}"'

    longest = (
        "greatest(" + ", ".join(f"coalesce(length({j(k)}), 0)" for k in transform.FIELD_KEYS) + ")"
    )

    def hashed(k: str) -> str:
        return f"CASE WHEN coalesce({j(k)}, '') <> '' THEN (hash({j(k)}) & 9223372036854775807)::BIGINT END"

    return f"""
WITH lines AS (
  SELECT line, CAST(regexp_extract(filename, 'dt=(\\d{{4}}-\\d{{2}}-\\d{{2}})/', 1) AS DATE) AS src_day
  FROM read_csv([{file_list}], columns={{'line': 'VARCHAR'}}, delim='\\x01', quote='', escape='',
                header=false, auto_detect=false, filename=true, compression='gzip')
), parsed AS (
  SELECT line, src_day, CASE WHEN json_valid(line) AND left(line, 1) = '{{' THEN json_transform(line, '{spec}') END AS j
  FROM lines
), typed AS (
  SELECT *,
    CASE WHEN regexp_full_match({j("ts")}, '-?[0-9]{{1,15}}') THEN CAST({j("ts")} AS BIGINT)
         WHEN regexp_full_match({j("ts")}, '{transform.ISO_TS[1:-1]}') THEN epoch_ms(try_cast({j("ts")} AS TIMESTAMPTZ))
    END AS ts_ms,
    try_cast({j("price")} AS DOUBLE) AS p,
    (epoch_ms(src_day::TIMESTAMP) + 86400000) AS end_ms
  FROM parsed
), checked AS (
  SELECT *, CASE
    WHEN j IS NULL THEN 'invalid_json'
    WHEN {longest} > {ev.max_field_chars} THEN 'oversize_field'
    WHEN regexp_matches(line, '{wrong}') OR ({j("price")} IS NOT NULL AND p IS NULL) THEN 'wrong_type'
    WHEN coalesce({j("profile_id")}, '') = '' THEN 'missing_profile_id'
    WHEN coalesce({j("ts")}, '') = '' THEN 'missing_ts'
    WHEN coalesce({j("event_type")}, '') = '' THEN 'missing_event_type'
    WHEN ts_ms IS NULL THEN 'bad_ts'
    WHEN ts_ms < end_ms - {cfg.histories.retention_days * 86_400_000} THEN 'ts_too_old'
    WHEN ts_ms > end_ms + {int(ev.future_tolerance_hours * 3_600_000)} THEN 'ts_in_future'
    WHEN p IS NOT NULL AND (isnan(p) OR p < 0 OR p > {ev.max_price}) THEN 'bad_price'
  END AS reason
  FROM typed
), good AS (
  SELECT src_day, ts_ms,
    substr(sha256(unhex('{opad.hex()}') || unhex(sha256(unhex('{ipad.hex()}') || encode({j("profile_id")})))), 1, 32) AS profile_id,
    CASE WHEN {j("event_type")} IN ({vocab}) THEN {j("event_type")} ELSE 'other' END AS event_type,
    {hashed("article_id")} AS article, {hashed("brand")} AS brand, {hashed("category")} AS category, p AS price,
    (hash(CASE WHEN coalesce({j("event_id")}, '') <> '' THEN 'id:' || {j("event_id")}
          ELSE concat_ws('|', 'ev', ts_ms::VARCHAR, {j("event_type")}, coalesce({j("article_id")}, '')) END)
      & 9223372036854775807)::BIGINT AS event_key
  FROM checked WHERE reason IS NULL
), firsts AS (
  SELECT * FROM good
  QUALIFY row_number() OVER (PARTITION BY profile_id, event_key
                             ORDER BY src_day, ts_ms, event_type, article, brand, category, price) = 1
), kept AS (
  SELECT * FROM firsts WHERE ts_ms >= {cutoff}
  QUALIFY row_number() OVER (PARTITION BY profile_id ORDER BY ts_ms DESC, event_key DESC)
          <= {cfg.histories.max_events}
)
SELECT profile_id, count(*)::INTEGER AS n_events,
  make_timestamp(min(ts_ms) * 1000) AS first_ts, make_timestamp(max(ts_ms) * 1000) AS last_ts,
  list(make_timestamp(ts_ms * 1000) ORDER BY ts_ms, event_key) AS ts,
  list(event_type ORDER BY ts_ms, event_key) AS event_type,
  list(article ORDER BY ts_ms, event_key) AS article,
  list(brand ORDER BY ts_ms, event_key) AS brand,
  list(category ORDER BY ts_ms, event_key) AS category,
  list(price ORDER BY ts_ms, event_key) AS price,
  list(event_key ORDER BY ts_ms, event_key) AS event_key
FROM kept GROUP BY profile_id
"""


def duckdb_child(root: str, last: dt.date, out: str) -> None:
    import duckdb

    from propensity import storage
    from propensity.config import load_config
    from propensity.histories.job import input_days

    cfg = load_config(overrides=[f"storage.root={root}"])
    files = [
        f
        for d in input_days(cfg, last, "full")
        for f in storage.list_files(storage.partition(cfg.uri("events"), d))
    ]
    con = duckdb.connect()
    con.execute(f"SET temp_directory='{out}.tmp'")
    t = time.perf_counter()
    con.execute(
        f"COPY ({duckdb_sql(cfg, files, last)}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    )
    seconds = time.perf_counter() - t
    events = con.execute(
        f"SELECT count(*) FROM read_csv([{', '.join(repr(f) for f in files)}], columns={{'line': 'VARCHAR'}}, "
        "delim='\\x01', quote='', escape='', header=false, auto_detect=false, compression='gzip')"
    ).fetchone()[0]
    profiles = con.execute(f"SELECT count(*) FROM '{out}'").fetchone()[0]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    emit(
        stage="duckdb_full", day=str(last), seconds=round(seconds, 1), events=events,
        events_per_s=round(events / seconds), profiles=profiles, peak_mib=rss,
        threads=con.execute("SELECT current_setting('threads')").fetchone()[0],
    )  # fmt: skip


def compare(root: str, last: dt.date, duck: str) -> None:
    """Spark's incremental snapshot and DuckDB's rows: same profiles and event counts."""
    import pyarrow.parquet as pq

    from propensity import storage

    spark_rows = storage.read_parquet(
        storage.partition(f"{root}/histories", last),
        ["profile_id", "n_events", "first_ts", "last_ts"],
    )
    duck_rows = pq.read_table(duck, columns=["profile_id", "n_events"])
    a = dict(zip(spark_rows["profile_id"].to_pylist(), spark_rows["n_events"].to_pylist()))
    b = dict(zip(duck_rows["profile_id"].to_pylist(), duck_rows["n_events"].to_pylist()))
    emit(stage="check", same_profiles=a.keys() == b.keys(), same_counts=a == b, profiles=len(a))


def child_run(args: list[str]) -> list[dict]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for line in lines:
        print(json.dumps(line), flush=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child {args[:2]} failed ({proc.returncode})")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", type=int, default=470_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--dir", help="keep the data here (reused when already generated)")
    p.add_argument("--driver-memory", default="6g")
    p.add_argument("--child", choices=["spark", "duckdb"])
    p.add_argument("--root")
    p.add_argument("--last")
    p.add_argument("--out")
    a = p.parse_args()
    if a.child == "spark":
        return spark_child(a.root, dt.date.fromisoformat(a.last), a.driver_memory)
    if a.child == "duckdb":
        return duckdb_child(a.root, dt.date.fromisoformat(a.last), a.out)

    from propensity import storage
    from propensity.events.generate import generate_stream

    root = a.dir or tempfile.mkdtemp(prefix="bench-aggregate-")
    last = START + dt.timedelta(days=a.days - 1)
    events = f"{root}/events"
    if not storage.is_complete(storage.partition(events, last)):
        t = time.perf_counter()
        gen = generate_stream(events, START, a.days, a.profiles, seed=1)
        seconds = time.perf_counter() - t
        total = gen.total_records + sum(gen.bad)
        emit(
            stage="generate",
            seconds=round(seconds, 1),
            events=total,
            events_per_s=round(total / seconds),
            profiles=a.profiles,
            days=a.days,
            format="jsonl.gz",
        )
    for d in (last - dt.timedelta(days=1), last):
        storage.delete(storage.partition(f"{root}/histories", d))
    spark = child_run(
        [
            "--child",
            "spark",
            "--root",
            root,
            "--last",
            str(last),
            "--driver-memory",
            a.driver_memory,
        ]
    )
    duck_out = f"{root}/duckdb-{last}.parquet"
    duck = child_run(["--child", "duckdb", "--root", root, "--last", str(last), "--out", duck_out])
    compare(root, last, duck_out)
    inc = next(r for r in spark if r["stage"] == "spark_incremental")
    ddb = duck[0]
    emit(
        stage="ratio", spark_incremental_over_duckdb_full=round(inc["seconds"] / ddb["seconds"], 2),
        goal="<= 2", cpus=os.cpu_count(), load_avg=[round(x, 1) for x in os.getloadavg()],
    )  # fmt: skip


if __name__ == "__main__":
    main()
