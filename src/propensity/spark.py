"""The Spark session of the aggregation job, tuned for small machines in local mode."""

from __future__ import annotations

import os

from propensity.config import Config


def spark_session(cfg: Config, app_name: str = "propensity-aggregate"):
    """A session from the config's `spark` section: few shuffle partitions, AQE on, no UI,
    UTC, millisecond Parquet timestamps, and no `_SUCCESS` from Spark (we write our own, last)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    # Under spark-submit (which starts the JVM and says so in this variable) its --master and
    # --driver-memory stand; a plain Python process takes them from the config.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(cfg.spark.master).config(
            "spark.driver.memory", cfg.spark.driver_memory
        )
    builder = (
        builder.config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MILLIS")
        .config("spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs", "false")
    )
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
