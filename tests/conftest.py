"""Shared fixtures: one local Spark session, one loopback S3 endpoint, configs in tmp_path."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path

import pytest
from _histories_data import QUICK_JVM

from propensity.config import Config, load_config

# Keep every test's S3 client pointed at loopback with fake credentials, never at AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("PROPENSITY_CONFIG", None)
# On the suite's tiny data (a few hundred examples) the candidate-vs-baseline AUROC difference is
# noise, so the baseline gate is off in every test (and subprocess) that does not say otherwise;
# tests of the baseline gate set `gate.min_lift_over_baseline` themselves (--set wins over this).
os.environ["PROPENSITY__GATE__MIN_LIFT_OVER_BASELINE"] = "-1"


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server mode) on 127.0.0.1; yields its http:// URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    yield url
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A fresh bucket on the loopback endpoint, with AWS_ENDPOINT_URL pointing at it."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def storage_root(request, tmp_path):
    """A storage root on local disk, then in a fresh bucket on the loopback S3 endpoint."""
    if request.param == "local":
        return str(tmp_path / "root")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/prefix"


@pytest.fixture
def root_handlers():
    """The root logger as it was: commands replace its handlers and level."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole run: 2 threads, few shuffle partitions, no UI."""
    from propensity.spark import spark_session

    # The JIT's quick tier only: tiny test jobs finish before C2 would pay off (session start
    # 12 s -> 8 s, a first aggregate 36 s -> 25 s, measured at load 5.5).
    cfg = load_config(overrides=["spark.master=local[2]", QUICK_JVM])
    session = spark_session(cfg, app_name="tests")
    yield session
    session.stop()


def make_config(root, *overrides: str) -> Config:
    """The embedded default config with storage under `root`, plus overrides."""
    return load_config(overrides=[f"storage.root={root}", *overrides])


@pytest.fixture
def config(tmp_path) -> Config:
    return make_config(tmp_path / "data")


# hadoop-aws and its AWS SDK bundle for Spark on s3a:// (`make test` puts them in the venv, see
# the Makefile's S3A_JARS); $PROPENSITY_TEST_S3A_JARS names another folder.
S3A_JARS = ("hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar")


@pytest.fixture(scope="session")
def s3a_jars() -> list[str]:
    """The jar paths that give Spark the s3a:// filesystem; skips the test where they are absent."""
    folder = Path(os.environ.get("PROPENSITY_TEST_S3A_JARS") or Path(sys.prefix) / "s3a-jars")
    jars = [folder / name for name in S3A_JARS]
    missing = [str(j) for j in jars if not j.is_file()]
    if missing:
        pytest.skip(
            f"no hadoop-aws for Spark on s3a:// ({', '.join(missing)} missing): `make test` "
            "extracts them from sagemaker-pyspark's sdist on PyPI (Maven is not reachable here)"
        )
    return [str(j) for j in jars]


def s3a_spark_conf(endpoint: str, jars: list[str]) -> dict[str, str]:
    """Spark properties for s3a:// against a loopback S3 endpoint: path-style, plain HTTP, the
    fake credentials of this file's environment."""
    conf = {
        "spark.jars": ",".join(jars),
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider":
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        "spark.hadoop.fs.s3a.access.key": os.environ["AWS_ACCESS_KEY_ID"],
        "spark.hadoop.fs.s3a.secret.key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "spark.hadoop.fs.s3a.endpoint.region": os.environ["AWS_REGION"],
    }
    # Hadoop 3.4+ (Spark 4) writes these defaults as durations ("60s") that hadoop-aws 3.3
    # parses as plain numbers: give them as numbers (the same values) so that one jar serves
    # both Spark lines. With a hadoop-aws matching Hadoop 3.4+ they are not needed.
    for key, value in {
        "threads.keepalivetime": "60", "connection.establish.timeout": "30000",
        "connection.timeout": "200000", "multipart.purge.age": "86400",
        "connection.ttl": "300000", "connection.request.timeout": "0",
        "connection.acquisition.timeout": "60000", "connection.idle.time": "60000",
    }.items():  # fmt: skip
        conf[f"spark.hadoop.fs.s3a.{key}"] = value
    return conf
