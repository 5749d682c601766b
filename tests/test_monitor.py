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
from propensity.monitoring import drift
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
    # Histories written by hand have no aggregation summary: that check says so, the rest pass.
    skipped = [c for c in report["checks"] if c["passed"] is None]
    assert [c["name"] for c in skipped] == ["quarantine_share"]
    assert "no aggregation summary" in skipped[0]["detail"]["skipped"]
    assert all(c["passed"] is True for c in report["checks"] if c["passed"] is not None), [
        c for c in report["checks"] if c["passed"] is False]
    for c in report["checks"]:
        assert set(c) >= {"name", "statistic", "value", "threshold", "passed", "n",
                          "reference_n", "p_value"}
    assert report["reference"]["drift_basis"] == "whole reference"  # a one-day reference
    assert report["quality"]["status"] == "pending"  # predictions of D-H do not exist
    page = storage.read_bytes(storage.join(part, "report.html")).decode()
    assert page.count("data:image/png;base64,") >= 3 and "No alert" in page
    assert page.index("No alert") < page.index("Reference:")  # the verdict first
    assert "img{max-width:100%" in page  # no plot wider than a reader's window
    assert "Trend (last 1 report)" in page  # the first report of the run: today's alone


def test_shifted_input_is_detected_and_exits_11(config):
    _publish_with_reference(config)
    write_histories(config, DAY, 1000, files=1, seed=5, shift=True)
    run(config, DAY)
    assert monitor(config, DAY).exit_code == 0  # reported, but no alert exit unless asked
    # By default drifted histories inputs are reported for diagnosis, not alerted on.
    assert monitor(config, DAY, "--fail-on-drift").exit_code in (0, 11)
    report = storage.read_json(storage.join(storage.partition(config.uri("reports"), DAY),
                                            "monitoring.json"))
    inputs = [c for c in report["checks"] if c["group"] == "inputs"]
    assert inputs and not any(c["alerts"] for c in inputs)
    result = monitor(config, DAY, "--fail-on-drift", "--set", "monitoring.alert_on_input_drift=true")
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
    # The report says how its calibration bins were made and how many rows each holds.
    page = storage.read_bytes(storage.join(storage.partition(config.uri("reports"), DAY),
                                           "report.html")).decode()
    counts = ", ".join(f"{b['count']:,}" for b in got["calibration"]["bins"])
    assert f"rows per bin {counts}" in page


def test_drift_statistics():
    a, b = [10, 20, 30, 40], [40, 30, 20, 10]
    assert drift.psi(a, a) == 0 and drift.psi(a, b) > 0.2
    assert drift.js_distance(a, a) == 0
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert drift.ks_binned(a, b) == pytest.approx(0.4)
    assert drift.wasserstein_binned([0, 1, 2], [1, 0], [0, 1]) == pytest.approx(1.0)


def test_psi_noise_level_matches_simulated_no_drift_psi():
    """Under no drift, PSI on 10 bins exceeds its noise level about `significance` of the time:
    the chi-square approximation the checks rely on (here at 5%, so that 2000 draws tell)."""
    rng = np.random.default_rng(0)
    share = np.full(10, 0.1)
    n_ref, n_cur = 300, 1000
    values = [drift.psi(rng.multinomial(n_ref, share), rng.multinomial(n_cur, share))
              for _ in range(2000)]
    _, critical = drift.psi_noise(10, n_ref, n_cur, 0.05)
    assert 0.02 < np.mean(np.array(values) > critical) < 0.09


def test_small_reference_widens_the_threshold_not_the_large_one(config):
    """The same shares are an alert against a large reference, noise against a tiny one."""
    from propensity.model.stats import score_histogram

    rng = np.random.default_rng(1)
    ref_scores, cur_scores = rng.beta(2, 20, 20_000), rng.beta(2.4, 20, 20_000)
    big = drift.score_check("t", score_histogram(ref_scores), score_histogram(cur_scores), config)
    small = drift.score_check("t", score_histogram(ref_scores[:60]), score_histogram(cur_scores),
                              config)
    assert big["n"] == 20_000 and big["reference_n"] == 20_000 and small["reference_n"] == 60
    assert small["noise_threshold"] > big["noise_threshold"]
    assert small["threshold"] > config.monitoring.psi_threshold
    assert big["detail"]["bins"] == config.monitoring.score_bins
    # Bins at the reference's quantiles: every bin holds about a tenth of the reference.
    shares = np.array(big["detail"]["reference_counts"]) / 20_000
    assert np.all(np.abs(shares - 0.1) < 0.02)


def test_schema_1_reference_is_compared_on_its_coarse_bins(config):
    from propensity.model.stats import score_histogram

    rng = np.random.default_rng(2)
    scores = rng.beta(2, 8, 5000)
    counts = np.histogram(scores, bins=20, range=(0, 1))[0]
    old = {"edges": [round(i / 20, 10) for i in range(21)], "counts": counts.tolist(),
           "n": 5000, "mean": float(scores.mean())}
    check = drift.score_check("t", old, score_histogram(rng.beta(2, 8, 5000)), config)
    assert check["passed"] is True and check["detail"]["bins"] <= 10


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
