"""Monitoring: drift checks against the model's reference, delayed quality, report, exit codes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from _scoring_data import make_histories, publish_model, write_histories
from _training_data import histories_table, simulate, write_histories_days
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.model import stats
from propensity.monitoring import drift, quality
from propensity.scoring.run import run

DAY = dt.date(2026, 1, 20)
runner = CliRunner()


def monitor(cfg, day=DAY, *args):
    return runner.invoke(app, ["monitor", "--date", str(day), *args,
                               "--set", f"storage.root={cfg.storage.root}"])


def reference_of(cfg, n=1000, seed=1000):
    """Reference statistics of unshifted histories (inputs only: the model is random)."""
    table = make_histories(n, DAY - dt.timedelta(days=1), cfg, seed=seed)
    return stats.summarize(table, {}, DAY - dt.timedelta(days=1), cfg)


def _publish_with_reference(cfg):
    """A random champion whose reference is its own statistics on unshifted histories."""
    # Dated a week before D: the same weekday, so calendar features do not move the scores.
    publish_model(cfg, "2026-01-13.1", reference_rows=1000)


def test_unshifted_input_passes_every_check(config):
    _publish_with_reference(config)
    write_histories(config, DAY, 1000, files=1, seed=5)
    run(config, DAY)
    result = monitor(config, DAY, "--fail-on-drift")
    assert result.exit_code == 0, result.output
    part = storage.partition(config.uri("reports"), DAY)
    assert storage.is_complete(part)
    report = storage.read_json(storage.join(part, "monitoring.json"))
    assert not report["drift_alert"]
    names = {c["name"] for c in report["checks"]}
    assert {"score_psi:order_7d", "event_type_mix", "input_ks:history_length",
            "input_ks:days_since_last_event", "null_share:article"} <= names
    assert all(c["passed"] is True for c in report["checks"]), report["checks"]
    for c in report["checks"]:
        assert set(c) >= {"name", "statistic", "value", "threshold", "passed"}
    assert report["quality"]["status"] == "pending"  # predictions of D-H do not exist
    page = storage.read_bytes(storage.join(part, "report.html")).decode()
    assert page.count("data:image/png;base64,") >= 3 and "all checks passed" in page


def test_shifted_input_is_detected_and_exits_11(config):
    _publish_with_reference(config)
    write_histories(config, DAY, 1000, files=1, seed=5, shift=True)
    run(config, DAY)
    assert monitor(config, DAY).exit_code == 0  # reported, but no alert exit unless asked
    result = monitor(config, DAY, "--fail-on-drift")
    assert result.exit_code == 11, result.output
    report = storage.read_json(storage.join(storage.partition(config.uri("reports"), DAY),
                                            "monitoring.json"))
    failed = {c["name"] for c in report["checks"] if c["passed"] is False}
    assert {"event_type_mix", "input_ks:history_length", "input_ks:days_since_last_event",
            "null_share:article"} <= failed
    assert "null_share:brand" not in failed  # unchanged by the shift
    page = storage.read_bytes(storage.join(storage.partition(config.uri("reports"), DAY),
                                           "report.html")).decode()
    assert "ALERT" in page and "event_type_mix" in page


def test_quality_on_matured_labels_uses_the_trainers_labels(config):
    from sklearn.metrics import average_precision_score, roc_auc_score

    from propensity.model.labels import labels

    then = DAY - dt.timedelta(days=config.horizon_days)
    events = simulate(300, DAY - dt.timedelta(days=30), DAY, seed=3)
    write_histories_days(config, events, [then, DAY])
    publish_model(config, "2026-01-12.1", reference=reference_of(config),
                  metrics={"order_7d": {"auroc": 0.99, "average_precision": 0.9}})
    run(config, then)
    run(config, DAY)

    result = monitor(config, DAY, "--fail-on-drift")
    assert result.exit_code == 12, result.output  # a random model is far below 0.99
    report = storage.read_json(storage.join(storage.partition(config.uri("reports"), DAY),
                                            "monitoring.json"))
    q = report["quality"]
    assert q["status"] == "ok" and q["predictions_date"] == str(then)
    got = q["targets"]["order_7d"]

    # Oracle: the trainer's label function on whole tables, sklearn's metrics.
    inputs = histories_table(events, then, config.histories.max_events)
    later = histories_table(events, DAY, config.histories.max_events)
    y = labels(inputs, later, config, then)[:, 0]
    preds = storage.read_parquet(storage.partition(config.uri("predictions"), then))
    order = {pid: i for i, pid in enumerate(inputs.column("profile_id").to_pylist())}
    y_pred_order = y[[order[p] for p in preds.column("profile_id").to_pylist()]]
    p = preds.column("order_7d").to_numpy()
    assert 0 < y.sum() < len(y)
    assert got["positives"] == int(y.sum())
    assert got["auroc"] == pytest.approx(roc_auc_score(y_pred_order, p))
    assert got["average_precision"] == pytest.approx(average_precision_score(y_pred_order, p))
    assert got["auc_drop"] == pytest.approx(0.99 - got["auroc"])
    assert got["passed"] is False and report["quality_alert"]
    assert sum(b["count"] for b in got["calibration"]["bins"]) == len(p)


def test_metrics_match_sklearn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    p = np.round(rng.random(500) * 0.5 + 0.5 * y * rng.random(500), 2)  # many ties
    assert quality.auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert quality.average_precision(y, p) == pytest.approx(average_precision_score(y, p))
    assert quality.auroc(np.zeros(5), p[:5]) is None
    cal = quality.calibration(y, p)
    assert sum(b["count"] for b in cal["bins"]) == 500
    assert cal["observed_rate"] == pytest.approx(y.mean())


def test_drift_statistics():
    a, b = [10, 20, 30, 40], [40, 30, 20, 10]
    assert drift.psi(a, a) == 0 and drift.psi(a, b) > 0.2
    assert drift.js_distance(a, a) == 0
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert drift.ks_binned(a, b) == pytest.approx(0.4)
    assert drift.wasserstein_binned([0, 1, 2], [1, 0], [0, 1]) == pytest.approx(1.0)


def test_trend_covers_earlier_reports_and_missing_input_exits_3(config):
    assert monitor(config, DAY).exit_code == 3  # no predictions(D)
    _publish_with_reference(config)
    for i, day in enumerate([DAY - dt.timedelta(days=1), DAY]):
        write_histories(config, day, 300, files=1, seed=10 + i)
        run(config, day)
    assert monitor(config, DAY - dt.timedelta(days=1)).exit_code == 0
    # The second day also carries the explanation stage's global attribution summary.
    result = monitor(config, DAY, "--set", "monitoring.attribution_profiles=8")
    assert result.exit_code == 0, result.output
    part = storage.partition(config.uri("reports"), DAY)
    page = storage.read_bytes(storage.join(part, "report.html")).decode()
    assert "Trend (last 2 reports)" in page
    assert "What drives the predictions" in page
    assert storage.read_json(storage.join(part, "monitoring.json"))["attribution"]["profiles"] == 8
