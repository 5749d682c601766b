"""What Spark work prints: the JVM's warnings and above only, and a progress line while it runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from propensity.spark import log_progress
from propensity.ui import heartbeat

SCRIPT = """
from propensity.config import load_config
from propensity.spark import spark_session
spark = spark_session(load_config(overrides=["spark.master=local[1]", "spark.driver_memory=512m"]))
spark.range(0, 20000, numPartitions=4).selectExpr("id % 7 AS k").groupBy("k").count().collect()
spark.stop()
"""


def test_a_fresh_jvm_prints_warnings_and_above_only(tmp_path):
    # A process of its own: the JVM's logging is set when the JVM starts, and this test run's
    # session has long started.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    err = run.stderr
    for noise in (
        "Using Spark's default log4j profile",
        "Setting default log level",
        "NativeCodeLoader",
        " INFO ",
        "level=INFO",
        "[Stage",
    ):
        assert noise not in err, err
    jvm_lines = [line for line in err.splitlines() if "logger=jvm." in line]
    assert all(("level=WARN" in line or "level=ERROR" in line) for line in jvm_lines), err


def test_progress_lines_while_spark_runs_a_job(spark, caplog):
    def slow(rows):
        time.sleep(0.4)
        return [sum(1 for _ in rows)]

    caplog.set_level(logging.INFO, logger="propensity.spark")
    stop = log_progress(spark.sparkContext, "aggregate", every_s=0.2)
    try:
        idle = len(caplog.records)
        time.sleep(0.5)
        assert len(caplog.records) == idle  # nothing while Spark is idle
        assert spark.sparkContext.parallelize(range(8), 8).mapPartitions(slow).sum() == 8
    finally:
        stop.set()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("spark working")]
    # The shared session's own heartbeat (stage "tests") may report the same job: ours only.
    fields = [dict(kv.split("=", 1) for kv in line.split()[2:]) for line in lines]
    fields = [f for f in fields if f["stage"] == "aggregate"]
    assert fields, caplog.text
    assert {f["jobs"] for f in fields} == {"1"}
    elapsed = [int(f["elapsed_s"]) for f in fields]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= 1
    tasks = [tuple(map(int, f["tasks"].split("/"))) for f in fields]
    assert all(0 <= done <= total <= 8 for done, total in tasks), tasks
    assert any(total == 8 and done < 8 for done, total in tasks), tasks  # seen mid-stage


def test_heartbeat_logs_only_busy_polls_and_ends_when_its_source_is_gone(caplog):
    answers = iter(
        [None, {"stage": "score", "elapsed_s": 1}, None, {"stage": "score", "elapsed_s": 3}]
    )
    gone = threading.Event()

    def poll():
        try:
            return next(answers)
        except StopIteration:
            gone.set()
            raise RuntimeError("source stopped") from None

    caplog.set_level(logging.INFO, logger="propensity.test")
    heartbeat("working", poll, 0.01, logging.getLogger("propensity.test"))
    assert gone.wait(5)
    time.sleep(0.1)
    assert [r.getMessage() for r in caplog.records] == [
        "working stage=score elapsed_s=1",
        "working stage=score elapsed_s=3",
    ]
    assert not any(t.name == "heartbeat: working" for t in threading.enumerate())


def test_heartbeat_reports_a_short_burst_of_work_between_two_lines(caplog):
    """Work that starts and ends between two lines (every 3 s) is still reported: the source is
    asked every second."""
    start = time.monotonic()

    def poll():
        return {"stage": "aggregate"} if 0.5 <= time.monotonic() - start <= 1.5 else None

    caplog.set_level(logging.INFO, logger="propensity.test")
    stop = heartbeat("working", poll, 3.0, logging.getLogger("propensity.test"))
    time.sleep(4.5)
    stop.set()
    assert [r.getMessage() for r in caplog.records] == ["working stage=aggregate"]


@pytest.fixture(autouse=True)
def _not_while_measuring():
    while os.path.exists("/tmp/BENCH_RUNNING"):  # someone is benchmarking on this machine
        time.sleep(30)
