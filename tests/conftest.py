"""Shared fixtures: one local Spark session, one loopback S3 endpoint, configs in tmp_path."""

from __future__ import annotations

import os
import uuid

import pytest

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


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole run: 2 threads, few shuffle partitions, no UI."""
    from propensity.spark import spark_session

    session = spark_session(load_config(overrides=["spark.master=local[2]"]), app_name="tests")
    yield session
    session.stop()


def make_config(root, *overrides: str) -> Config:
    """The embedded default config with storage under `root`, plus overrides."""
    return load_config(overrides=[f"storage.root={root}", *overrides])


@pytest.fixture
def config(tmp_path) -> Config:
    return make_config(tmp_path / "data")
