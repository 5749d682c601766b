"""`aggregate` as extract -> transform -> load: the I/O around `transform`.

One run writes `histories/dt=D/` (Parquet, `_summary.json`, `_SUCCESS` last) and
`quarantine/dt=D/` (Parquet of raw text, reason, source file; `_SUCCESS`). It holds the lease
`aggregate/dt=D` for the whole run (a second run of the day refuses, exit 13). Both markers are
removed before anything is rewritten, so a crashed or running job never leaves a partition a
reader would accept, and each marker lists the Parquet files this run wrote: the partition's
content, whatever else a crashed run left in the folder.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

# pyspark at the top, as in `transform`: the deferral is histories/commands.py's import of us.
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from rich.table import Table

from propensity import lease, storage
from propensity.config import Config
from propensity.errors import BadInput, MissingInput
from propensity.histories import transform
from propensity.histories.schema import HISTORY_VERSION, REASONS, SUMMARY_NAME
from propensity.ui import console, kv

log = logging.getLogger(__name__)

Mode = Literal["incremental", "full", "bootstrap"]
TEXT_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz")
# Spark settings the job relies on, applied to whichever session it is given.
RUNTIME_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MILLIS",  # contract: timestamp[ms, UTC]
    "spark.sql.parquet.compression.codec": "zstd",
}
# Passed to the Hadoop output committer of every write: we write our own marker, last.
WRITE_OPTIONS = {"mapreduce.fileoutputcommitter.marksuccessfuljobs": "false"}


class _Stages:
    """Seconds per stage, for the summary."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        log.info(kv(stage=name, status="started"))
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        log.info(kv(stage=name, status="done", seconds=self.seconds[name]))


def spark_path(spark: SparkSession, uri: str) -> str:
    """A URI as Spark's Hadoop filesystems take it: local paths absolute; `s3://` as is where a
    filesystem serves that scheme (EMRFS on EMR), else `s3a://` where hadoop-aws is present."""
    if not storage.is_s3(uri):
        return storage.resolve(uri)[1]
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    rest = uri.split("://", 1)[1]
    for scheme in ("s3", "s3a"):
        try:
            jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, conf)
            return f"{scheme}://{rest}"
        except Exception:  # noqa: BLE001, S112 - py4j raises a generic error for "no FileSystem"
            continue
    raise MissingInput(
        f"{uri}: Spark has no S3 filesystem: run on EMR (EMRFS) or add hadoop-aws to the classpath"
    )


def input_days(cfg: Config, day: dt.date, mode: Mode) -> list[dt.date]:
    """The event partitions a run reads: D, or for --full every partition that can hold events
    of D's window (late deliveries included: partitions up to the future tolerance earlier)."""
    if mode != "full":
        return [day]
    lead = math.ceil(cfg.events.future_tolerance_hours / 24)
    first = transform.window_start(day, cfg.histories.retention_days).date() - dt.timedelta(
        days=lead
    )
    existing = storage.list_partitions(cfg.uri("events"), complete_only=False)
    return [d for d in existing if first <= d <= day]


def extract_events(spark: SparkSession, cfg: Config, days: list[dt.date]) -> DataFrame:
    """The raw records of complete event partitions as text fields (transform.fields_from_*).

    Refuses a partition without its marker; ignores hidden files (`_SUCCESS`, `_truth/`, ...).
    """
    text, parquet = [], []
    for day in days:
        part = storage.partition(cfg.uri("events"), day)
        storage.require_complete(part)
        by_kind: dict[str, list[str]] = {"text": [], "parquet": []}
        for uri in storage.list_files(part):
            if uri.endswith(TEXT_SUFFIXES):
                by_kind["text"].append(uri)
            elif uri.endswith(".parquet"):
                by_kind["parquet"].append(uri)
            else:
                raise BadInput(f"{uri}: unknown event file type (expected JSON lines or Parquet)")
        for kind, out in (("text", text), ("parquet", parquet)):
            # A folder of one kind goes to Spark as one path (it skips hidden files): cheaper
            # than hundreds of file paths, which Spark lists with a job of its own.
            single = not by_kind["parquet" if kind == "text" else "text"]
            paths = [part] if single and by_kind[kind] else by_kind[kind]
            out.extend(spark_path(spark, u) for u in paths)
    # The partition's day from the file's path, parsed with a try_ (a plain to_date fails under
    # ANSI mode and gives null without it): a file outside a dt= folder fails the run either way.
    dt_text = F.regexp_extract("source_file", r"dt=(\d{4}-\d{2}-\d{2})/[^/]*$", 1)
    parsed = F.to_date(F.try_to_timestamp(dt_text, F.lit("yyyy-MM-dd")))
    src_day = F.when(parsed.isNotNull(), parsed).otherwise(
        F.raise_error(F.concat(F.lit("event file outside a dt=YYYY-MM-DD folder: "), "source_file"))
    )
    frames = []
    if text:
        lines = spark.read.text(text).select(
            F.col("value").alias("raw"), F.input_file_name().alias("source_file")
        )
        frames.append(transform.fields_from_json(lines.withColumn("src_day", src_day), cfg))
    if parquet:
        rows = spark.read.parquet(*parquet).withColumn("source_file", F.input_file_name())
        frames.append(transform.fields_from_parquet(rows.withColumn("src_day", src_day), cfg))
    if not frames:
        raise MissingInput(f"no event files in {[str(d) for d in days]} under {cfg.uri('events')}")
    return frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])


@dataclass(frozen=True)
class Validated:
    """The run's records after `transform.validate` (persisted: unpersist when done), counted."""

    events: DataFrame
    counts: dict[dt.date, Counter[str]]  # per source day: records per reason, "ok" for good
    unknown: Counter[dt.date]  # per source day: good records of a type outside the vocabulary


def run(spark: SparkSession, cfg: Config, day: dt.date | str, mode: Mode = "incremental") -> dict:
    """Aggregate one day under its lease; returns the summary also written to `_summary.json`.
    LeaseHeld (exit 13) when another run of the day holds the lease."""
    day = storage.as_date(day)
    with lease.acquire(cfg, "aggregate", lease.day_key(day)) as held:
        return _run(spark, cfg, day, mode, held)


def _run(spark: SparkSession, cfg: Config, day: dt.date, mode: Mode, held: lease.Lease) -> dict:
    stage = _Stages()
    out = storage.partition(cfg.uri("histories"), day)
    quarantine = storage.partition(cfg.uri("quarantine"), day)
    for k, v in RUNTIME_CONF.items():
        spark.conf.set(k, v)
    previous_files = previous_snapshot(spark, cfg, day, mode)
    days = input_days(cfg, day, mode)
    if day not in days:
        storage.require_complete(storage.partition(cfg.uri("events"), day))
    with stage("validate"):
        checked = validate(spark, cfg, days)
    try:
        check_bad_share(cfg, checked.counts)
        # Readers must never take a partition being rewritten as complete: markers go first.
        storage.delete(storage.join(out, storage.MARKER))
        storage.delete(storage.join(quarantine, storage.MARKER))
        with stage("quarantine"):
            write_quarantine(spark, checked.events, day, quarantine)
        with stage("merge_write"):
            stats = merge_and_write(spark, cfg, checked, previous_files, day, out)
    finally:
        checked.events.unpersist()
    summary = summarise(cfg, day, mode, days, bool(previous_files), checked, stats, stage.seconds)
    held.check()  # a run whose lease was taken over publishes nothing
    storage.write_json(storage.join(out, SUMMARY_NAME), summary)
    # Spark's overwrite emptied each folder first and the lease kept other runs out, so the
    # Parquet files there now are this run's: the markers name them.
    storage.mark_complete(quarantine, storage.list_files(quarantine, suffix=".parquet"))
    storage.mark_complete(out, storage.list_files(out, suffix=".parquet"))
    log.info(kv(date=day, mode=mode, **{k: v for k, v in summary.items() if isinstance(v, int)}))
    return summary


def previous_snapshot(spark: SparkSession, cfg: Config, day: dt.date, mode: Mode) -> list[str]:
    """The Parquet files of D-1's snapshot, as Spark paths, for an incremental run (none for
    --full or --bootstrap); refuses a missing or incomplete D-1, naming the ways out."""
    if mode != "incremental":
        return []
    before = day - dt.timedelta(days=1)
    prev = storage.partition(cfg.uri("histories"), before)
    if not storage.is_complete(prev):
        raise MissingInput(
            f"histories partition {prev} is missing or incomplete: aggregate {before} "
            "first, or rebuild this day with --full (from the raw window) or --bootstrap "
            "(start a new chain from this day's events alone)"
        )
    return [spark_path(spark, u) for u in storage.parquet_files(prev)]


def validate(spark: SparkSession, cfg: Config, days: list[dt.date]) -> Validated:
    """Extract and validate the events of `days`, persisted, with their counts per source day
    and reason (one pass)."""
    key = cfg.pseudonym_key()
    events = transform.validate(extract_events(spark, cfg, days), cfg, key)
    events = events.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows = (
            events.groupBy("src_day", F.coalesce("reason", F.lit("ok")).alias("r"))
            .agg(
                F.count("*").alias("n"), F.sum(F.col("unknown_type").cast("long")).alias("unknown")
            )
            .collect()
        )
    except BaseException:
        events.unpersist()
        raise
    counts: dict[dt.date, Counter[str]] = {}
    unknown: Counter[dt.date] = Counter()
    for r in rows:
        counts.setdefault(r["src_day"], Counter())[r["r"]] += r["n"]
        unknown[r["src_day"]] += r["unknown"] or 0
    return Validated(events, counts, unknown)


def check_bad_share(cfg: Config, counts: dict[dt.date, Counter[str]]) -> None:
    """Refuses the run when a source day's share of bad records is above events.max_bad_share."""
    for day, c in sorted(counts.items()):
        total = sum(c.values())
        bad = total - c["ok"]
        if total and bad / total > cfg.events.max_bad_share:
            worst = ", ".join(f"{r}={n}" for r, n in c.most_common() if r != "ok")
            raise BadInput(
                f"events/dt={day}: {bad} of {total} records are bad ({bad / total:.1%} > "
                f"events.max_bad_share={cfg.events.max_bad_share}): {worst}; nothing was written"
            )


def write_quarantine(spark: SparkSession, events: DataFrame, day: dt.date, uri: str) -> None:
    """The bad records delivered in D's partition (raw text, reason, source file): one file."""
    bad = events.filter(F.col("reason").isNotNull() & (F.col("src_day") == F.lit(day)))
    _write_parquet(
        bad.select("raw", "reason", "source_file")
        .repartition(1)
        .sortWithinPartitions("source_file", "reason", "raw"),
        uri,
        spark,
    )


def merge_and_write(
    spark: SparkSession,
    cfg: Config,
    checked: Validated,
    previous_files: list[str],
    day: dt.date,
    uri: str,
) -> dict[str, int]:
    """Merge the good events into D-1's snapshot (if any) and write the snapshot of `day`;
    returns the merge's statistics (`transform.merge_stats`, observed while writing)."""
    previous = spark.read.parquet(*previous_files) if previous_files else None
    good = checked.events.filter(F.col("reason").isNull())
    # The day's events are broadcast (the snapshot then streams, never shuffled) when few.
    small = sum(c["ok"] for c in checked.counts.values()) <= cfg.histories.broadcast_max_events
    merged = transform.merge(
        good, previous, day, cfg, broadcast_events=small and bool(previous_files)
    )
    obs = Observation("histories")
    merged = merged.observe(obs, *transform.merge_stats())
    # Written in the partitioning the work already has, merged down to at most
    # output_files (coalesce: no shuffle only to lay out files).
    _write_parquet(transform.finish(merged).coalesce(cfg.histories.output_files), uri, spark)
    return {k: int(v or 0) for k, v in obs.get.items()}


def summarise(
    cfg: Config,
    day: dt.date,
    mode: Mode,
    days: list[dt.date],
    had_previous: bool,
    checked: Validated,
    stats: dict[str, int],
    seconds: dict[str, float],
) -> dict:
    """The run summary (`_summary.json`): D's records, the window's, the merge's statistics."""
    today = checked.counts.get(day, Counter())
    counts = checked.counts.values()
    return {
        "date": day.isoformat(),
        "mode": mode,
        "histories_version": HISTORY_VERSION,
        "input_partitions": [d.isoformat() for d in days],
        "previous_snapshot": str(day - dt.timedelta(days=1)) if had_previous else None,
        "events_read": sum(today.values()),
        "events_valid": today["ok"],
        "quarantined": {r: today[r] for r in REASONS if today[r]},
        "quarantined_total": sum(today.values()) - today["ok"],
        "unknown_event_types": checked.unknown[day],
        "window_events_read": sum(sum(c.values()) for c in counts),
        "window_quarantined": sum(sum(c.values()) - c["ok"] for c in counts),
        **stats,
        "max_events": cfg.histories.max_events,
        "retention_days": cfg.histories.retention_days,
        "seconds": seconds,
    }


def _write_parquet(df: DataFrame, uri: str, spark: SparkSession) -> None:
    df.write.mode("overwrite").options(**WRITE_OPTIONS).parquet(spark_path(spark, uri))


def print_summary(summary: dict) -> None:
    """The run summary as a small table on the console (stderr)."""
    table = Table(title=f"aggregate {summary['date']} ({summary['mode']})", show_header=False)
    for k, v in summary.items():
        if k in ("date", "mode"):
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        elif isinstance(v, list):
            v = f"{v[0]} .. {v[-1]} ({len(v)})" if len(v) > 2 else ", ".join(v)
        table.add_row(k, str(v))
    console.print(table)
