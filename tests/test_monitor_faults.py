"""Planted faults against the monitor: each kind raises its own alert on the day it starts.

One generated shop (2000 profiles, 15 days) is aggregated once up to D-1; every test then
generates the same stream with one fault planted on D (identical before D, so histories(D-1) is
shared), aggregates D incrementally, scores it with a random champion and monitors it. The
champion's reference is its own statistics on histories(D-7) and histories(D-1), like a trained
version's (several days, one of them D's weekday).
"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
import torch
from _scoring_data import publish_model
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.cycle import stages
from propensity.events.generate import Fault, generate_stream
from propensity.histories.job import run as aggregate
from propensity.model import stats
from propensity.model.network import PropensityModel
from propensity.monitoring.job import run_monitor
from propensity.scoring.engine import score_table
from propensity.scoring.run import run as score

START = dt.date(2026, 1, 1)
DAYS = 15
D = START + dt.timedelta(days=DAYS - 1)
PROFILES = 2000
SEED = 3
OVERRIDES = ("histories.retention_days=30", "histories.max_events=50")


def _generate(cfg, faults=()):
    generate_stream(cfg.uri("events"), START, DAYS, PROFILES, seed=SEED,
                    fields=cfg.events.fields, faults=list(faults))


@pytest.fixture(scope="module")
def shop(spark, tmp_path_factory):
    """The clean stream aggregated at D-7 and D-1, and a champion with its reference."""
    root = tmp_path_factory.mktemp("shop")
    cfg = make_config(root, *OVERRIDES)
    _generate(cfg)
    days = [D - dt.timedelta(days=7), D - dt.timedelta(days=1)]
    for day in days:
        aggregate(spark, cfg, day, "full")
    torch.manual_seed(0)  # the weights publish_model(seed=0) gives the champion
    model = PropensityModel.from_config(cfg).eval()
    parts = []
    for day in days:
        table = storage.read_parquet(storage.partition(cfg.uri("histories"), day))
        probs = score_table(model, table, day, cfg.scoring.batch_size)
        parts.append(stats.summarize(
            table, {t: probs[:, j] for j, t in enumerate(cfg.target_names)}, day, cfg))
    reference = stats.merge(parts)
    reference["covers"] = [str(d) for d in days]
    publish_model(cfg, f"{days[0]}.1", seed=0, reference=reference)
    return root


def _monitor_day(spark, shop, tmp_path, faults=()):
    """The monitoring result of D for the stream with `faults` planted (storage under
    tmp_path/run)."""
    root = tmp_path / "run"
    shutil.copytree(shop, root)
    cfg = make_config(root, *OVERRIDES)
    if faults:
        _generate(cfg, faults)
    aggregate(spark, cfg, D, "incremental")
    score(cfg, D)
    return run_monitor(cfg, D)


def _failed(result, group=None):
    return {c["name"] for c in result["checks"]
            if c["passed"] is False and (group is None or c["group"] == group)}


def test_clean_day_raises_no_data_quality_or_event_alert(spark, shop, tmp_path):
    result = _monitor_day(spark, shop, tmp_path)
    assert not result["data_quality_alert"], _failed(result)
    assert not {n for n in _failed(result) if n.startswith("type_share_today")}
    assert result["reference"]["drift_basis"] == "same weekday"
    assert result["reference"]["drift_against"] == [str(D - dt.timedelta(days=7))]
    for c in result["checks"]:
        assert {"n", "reference_n", "threshold", "p_value"} <= set(c)


def test_tracking_outage_raises_a_data_quality_alert(spark, shop, tmp_path):
    result = _monitor_day(spark, shop, tmp_path, [Fault("outage", D, "add_to_cart")])
    assert result["data_quality_alert"]
    assert "tracking_outage:add_to_cart" in _failed(result, "data_quality")
    assert "tracking_outage:view" not in _failed(result)
    # Named as such on the command line and in the daily cycle, under exit code 11.
    cfg = make_config(tmp_path / "run", *OVERRIDES)
    cli = CliRunner().invoke(app, ["monitor", "--date", str(D), "--fail-on-drift",
                                   "--set", f"storage.root={cfg.storage.root}",
                                   *[a for o in OVERRIDES for a in ("--set", o)]])
    assert cli.exit_code == 11 and "DATA QUALITY" in cli.output, cli.output
    code, detail = stages.report_outcome(cfg, D)
    assert code == 11 and detail.startswith("DATA QUALITY ALERT")
    assert not stages.retrain_requested(cfg, D)  # broken input is no reason to retrain


def test_prices_in_cents_raise_a_data_quality_alert(spark, shop, tmp_path):
    result = _monitor_day(spark, shop, tmp_path, [Fault("cents", D, "100")])
    assert "price_scale_today" in _failed(result, "data_quality")


def test_a_renamed_field_arrives_as_null_and_raises_a_data_quality_alert(spark, shop, tmp_path):
    result = _monitor_day(spark, shop, tmp_path, [Fault("rename", D, "price")])
    failed = _failed(result, "data_quality")
    assert "null_share_today:price" in failed
    assert "null_share_today:brand" not in failed


def test_a_behaviour_shift_raises_a_drift_alert_not_a_data_quality_one(spark, shop, tmp_path):
    result = _monitor_day(spark, shop, tmp_path, [Fault("order_rate", D, "4")])
    assert result["drift_alert"]
    assert "type_share_today:order" in _failed(result, "events")
    assert not {n for n in _failed(result) if n.startswith("tracking_outage")}
