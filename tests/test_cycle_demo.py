"""`propensity demo` end to end on a tiny size, as a new user runs it (the README's command)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.config import load_config
from propensity.cycle.demo import PAST_DAYS, START
from propensity.registry import store

pytestmark = pytest.mark.slow
DAYS = 8  # the first model is trained on the 8th day (horizon 7)


def test_demo_runs_the_cycle_and_says_where_the_outputs_are(spark, tmp_path):
    folder = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--dir", str(folder), "--profiles", "300", "--days", str(DAYS), "--set", "training.max_epochs=1"])
    assert result.exit_code == 0, result.output

    cfg = load_config(folder / "config.yaml")
    assert cfg.storage.root == str((folder / "data").resolve())
    days = [START + dt.timedelta(days=i) for i in range(DAYS)]
    assert len(storage.list_partitions(cfg.uri("events"))) == PAST_DAYS + DAYS
    assert storage.list_partitions(cfg.uri("histories")) == days
    # the first snapshot holds the two weeks of past events
    summary = storage.read_json(storage.join(storage.partition(cfg.uri("histories"), days[0]), "_summary.json"))
    assert summary["mode"] == "full" and len(summary["input_partitions"]) == PAST_DAYS + 1
    # the first model is trained (through the gate) as soon as labels are mature
    (version,) = store.version_names(cfg)
    assert version == f"{days[7]}.1"
    decision = store.read_metadata(cfg, version)["gate"]["decision"]
    if decision == "approved":
        assert storage.is_complete(storage.partition(cfg.uri("predictions"), days[7]))
        assert storage.exists(storage.join(storage.partition(cfg.uri("reports"), days[7]), "report.html"))
        assert "HTML report" in result.output
    # a run record per day, and the table of what happened
    runs = storage.list_files(storage.join(cfg.uri("reports"), "runs"), suffix=".json")
    assert sorted(json.loads(open(r).read())["day"] for r in runs) == [str(d) for d in days]
    assert "where the outputs are" in result.output

    # running it again does nothing: every step of every day is already done
    again = CliRunner().invoke(app, ["demo", "--dir", str(folder), "--profiles", "300", "--days", str(DAYS), "--set", "training.max_epochs=1"])
    assert again.exit_code == 0, again.output
    runs_again = storage.list_files(storage.join(cfg.uri("reports"), "runs"), suffix=".json")
    latest = [json.loads(open(r).read()) for r in sorted(set(runs_again) - set(runs))]
    assert len(latest) == DAYS
    assert all(s["outcome"] == "skipped" for r in latest for s in r["steps"])
    assert store.version_names(cfg) == [version]
