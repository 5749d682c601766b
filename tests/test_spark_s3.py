"""Spark on S3: `aggregate` and `score --engine spark` reading and writing s3a:// against moto's
server on loopback, through the production code path (`histories.job.spark_path` picks the
scheme by the Hadoop filesystems the session has; the config's `spark.conf` brings hadoop-aws)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import boto3
import pytest
import yaml
from _histories_data import QUICK_JIT, oracle, read_raw, snapshot_rows
from _scoring_data import publish_model
from conftest import make_config, s3a_spark_conf

from propensity import storage
from propensity.config import load_config
from propensity.events.generate import generate_stream
from propensity.scoring import layout

START = dt.date(2026, 1, 1)
DAY = START + dt.timedelta(days=2)

# One driver process, as `propensity aggregate` and `propensity score` would run one after the
# other, sharing one JVM (two would double the test's time): the same typer commands.
DRIVER = """
import sys
from propensity.cli import app
from propensity.config import load_config
from propensity.histories.job import spark_path
from propensity.spark import spark_session

path, day = sys.argv[1], sys.argv[2]
cfg = load_config(path)
print("SPARK_PATH", spark_path(spark_session(cfg), cfg.uri("histories")), flush=True)
for args in (["aggregate", "--date", day, "--full"],
             ["score", "--date", day, "--engine", "spark"]):
    try:
        app([*args, "--config", path], prog_name="propensity")
    except SystemExit as e:
        if e.code:
            raise
"""


def upload(local: Path, bucket: str, prefix: str, endpoint: str) -> None:
    """Every file under `local` (markers and hidden folders too) to s3://bucket/prefix/."""
    client = boto3.client("s3", endpoint_url=endpoint)
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        client.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(local)}")


def s3_keys(bucket: str, prefix: str, endpoint: str) -> list[str]:
    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2")
    return [
        o["Key"]
        for p in pages.paginate(Bucket=bucket, Prefix=prefix)
        for o in p.get("Contents", [])
    ]


@pytest.mark.slow
def test_aggregate_and_spark_scoring_on_s3a(tmp_path, s3_endpoint, s3_bucket, s3a_jars):
    local = make_config(tmp_path / "local", "events.max_bad_share=0.2")
    generate_stream(local.uri("events"), START, 3, 150, seed=5, bad_share=0.03)
    upload(Path(local.uri("events")), s3_bucket, "data/events", s3_endpoint)
    # The reference: the pure-Python oracle's snapshot of the same files (test_aggregate_job.py
    # checks that the job on local paths gives it; a Spark run of its own here would cost 5-14 s).
    raw = read_raw(local, [START + dt.timedelta(days=i) for i in range(3)])
    expected = oracle(local, local.pseudonym_key(), raw, DAY)

    # The embedded config with the storage on S3 and hadoop-aws in `spark.conf`, as a user's.
    tree = yaml.safe_load(resources.files("propensity").joinpath("configs/local.yaml").read_text())
    tree["storage"] = {"root": f"s3://{s3_bucket}/data"}
    tree["events"]["max_bad_share"] = 0.2
    # The driver's JVM runs tiny jobs: the JIT's C1 tier alone (see QUICK_JIT) halves its time.
    conf = {**s3a_spark_conf(s3_endpoint, s3a_jars), "spark.driver.extraJavaOptions": QUICK_JIT}
    tree["spark"].update(master="local[2]", conf=conf)
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path)
    publish_model(cfg, "2026-01-02.1")  # the champion, in the registry on S3

    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(path), str(DAY)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # No Hadoop filesystem serves s3:// here (that is EMRFS): the job took s3a://.
    assert f"SPARK_PATH s3a://{s3_bucket}/data/histories" in done.stdout

    out = storage.partition(cfg.uri("histories"), DAY)
    assert storage.is_complete(out) and storage.is_complete(
        storage.partition(cfg.uri("quarantine"), DAY)
    )
    assert cfg.pseudonym_key() == local.pseudonym_key()
    assert snapshot_rows(cfg, DAY) == expected
    summary = json.loads(storage.read_bytes(storage.join(out, "_summary.json")))
    assert summary["quarantined_total"] > 0 and summary["events_valid"] > 0
    # Spark's committer left nothing behind on S3 (no _temporary, no Spark _SUCCESS of its own).
    keys = s3_keys(s3_bucket, "data/", s3_endpoint)
    assert not [k for k in keys if "_temporary" in k]

    predictions = storage.partition(cfg.uri("predictions"), DAY)
    assert storage.is_complete(predictions)
    manifest = json.loads(storage.read_bytes(storage.join(predictions, layout.MANIFEST)))
    assert manifest["engine"] == "spark" and manifest["rows"] == len(expected)
