"""The Spark session of the aggregation job, tuned for small machines in local mode."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import time
import weakref
from pathlib import Path

from propensity.config import Config
from propensity.ui import heartbeat

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 10.0  # a "spark working" line this often while Spark runs jobs

# The JVM's own logging (log4j2) when this process starts it: warnings and above only, as
# logfmt-like lines on stderr; without a file Spark prints its defaults' banner and INFO lines.
_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = ts=%d{yyyy-MM-dd'T'HH:mm:ss.SSS'Z'}{UTC} level=%p logger=jvm.%c %m%n%ex
# Said on every machine without native Hadoop libraries, and harmless there.
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
# Parquet's writers warn about statistics they do not write; Spark's own defaults quiet them too.
logger.parquet.name = org.apache.parquet
logger.parquet.level = error
"""

_beating: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # SparkContext -> stop event


def _log4j2_file() -> Path:
    """The JVM logging config as a file (log4j2 reads only files), named by its content so
    concurrent runs share it; written whole (temp then rename)."""
    digest = hashlib.sha256(_LOG4J2.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"propensity-log4j2-{digest}.properties"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(_LOG4J2)
        os.replace(tmp, path)
    return path


def _java_options(conf: dict[str, str]) -> str:
    """spark.driver.extraJavaOptions with our log4j2 file first, unless the config names one."""
    user = conf.get("spark.driver.extraJavaOptions", "")
    if "log4j2.configurationFile" in user:
        return user
    return f"-Dlog4j2.configurationFile={_log4j2_file().as_uri()} {user}".strip()


def spark_session(cfg: Config, app_name: str = "propensity-aggregate"):
    """A session from the config's `spark` section: few shuffle partitions, AQE on, no UI,
    UTC, millisecond Parquet timestamps, and no `_SUCCESS` from Spark (we write our own, last).
    The JVM logs warnings and above only, and a progress line is logged while jobs run."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    conf = dict(cfg.spark.conf)
    # Under spark-submit (which starts the JVM and says so in this variable) its --master,
    # --driver-memory and the cluster's logging stand; a plain Python process starts the JVM
    # itself and takes them from the config.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(cfg.spark.master).config(
            "spark.driver.memory", cfg.spark.driver_memory
        )
        conf["spark.driver.extraJavaOptions"] = _java_options(conf)
    builder = (
        builder.config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        # Spark's console bar redraws one line with carriage returns: on a terminal only (logs
        # get the progress lines below instead).
        .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower())
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MILLIS")
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    if session.sparkContext not in _beating:  # getOrCreate may hand back a running session
        _beating[session.sparkContext] = log_progress(
            session.sparkContext, app_name.removeprefix("propensity-")
        )
    return session


def log_progress(sc, stage: str, every_s: float = PROGRESS_SECONDS):
    """Log `spark working stage=... elapsed_s=... jobs=... tasks=done/total` every `every_s`
    seconds while `sc` runs jobs (elapsed since this call); stops with `sc` or when the returned
    event is set."""
    start = time.monotonic()

    def poll() -> dict | None:
        tracker = sc.statusTracker()  # raises once sc is stopped, which ends the heartbeat
        jobs = tracker.getActiveJobsIds()
        if not jobs:
            return None
        stages = [s for s in map(tracker.getStageInfo, tracker.getActiveStageIds()) if s]
        return {
            "stage": stage,
            "elapsed_s": round(time.monotonic() - start),
            "jobs": len(jobs),
            "tasks": f"{sum(s.numCompletedTasks for s in stages)}/{sum(s.numTasks for s in stages)}",
        }

    return heartbeat("spark working", poll, every_s, log)
