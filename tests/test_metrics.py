"""One definition of each metric: the model room's against torchmetrics and scikit-learn, and
monitoring's realised figures against a version's validation figures on the same rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from propensity.model import metrics, stats
from propensity.monitoring import quality


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.25
    p = np.round(np.clip(0.1 + 0.3 * y * rng.random(n) + 0.2 * rng.random(n), 0, 1), 2)  # ties
    return y, p


def test_auroc_and_average_precision_match_torchmetrics_and_sklearn():
    y, p = _data()
    pt, yt = torch.from_numpy(p.astype(np.float32)), torch.from_numpy(y).long()
    assert metrics.auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert metrics.auroc(y, p) == pytest.approx(float(binary_auroc(pt, yt)), abs=1e-6)
    assert metrics.average_precision(y, p) == pytest.approx(average_precision_score(y, p))
    assert metrics.average_precision(y, p) == pytest.approx(
        float(binary_average_precision(pt, yt)), abs=1e-6)
    assert metrics.log_loss(y, p) == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    assert metrics.auroc(np.zeros(5), p[:5]) is None
    assert metrics.average_precision(np.zeros(5), p[:5]) is None


def test_auroc_standard_error_matches_the_spread_of_resamples():
    y, p = _data(2000, seed=1)
    auc = metrics.auroc(y, p)
    se = metrics.auroc_se(auc, int(y.sum()), int((~y).sum()))
    rng = np.random.default_rng(2)
    boots = [metrics.auroc(y[i], p[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(300))]
    assert se == pytest.approx(np.std(boots), rel=0.3)


def test_calibration_bins_are_the_scores_quantiles_on_the_fine_grid():
    y, p = _data(1000, seed=3)
    cal = metrics.calibration(y, p)
    assert cal["edges"] == metrics.calibration_edges(p)
    assert sum(b["count"] for b in cal["bins"]) == 1000
    assert all(b["count"] for b in cal["bins"])  # quantile bins: none empty
    assert cal["observed_rate"] == pytest.approx(y.mean())
    # ECE is the count-weighted mean gap over the bins.
    gaps = [b["count"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in cal["bins"]]
    assert cal["ece"] == pytest.approx(sum(gaps) / 1000)


def test_realised_figures_on_validation_rows_equal_the_validation_figures(config):
    """Monitoring scores a version's own validation rows exactly as training recorded them:
    same AUROC, AP, calibration bins (the reference's quantiles) and error; no drop."""
    y, p = _data(1500, seed=4)
    validation = metrics.metrics(p[:, None], y[:, None].astype(np.float32), ["t"])["t"]
    reference = stats.score_histogram(p)  # the reference holds the validation scores
    got = quality._target(config, p, y.astype(np.float64), validation, {}, reference)
    assert got["auroc"] == pytest.approx(validation["auroc"])
    assert got["average_precision"] == pytest.approx(validation["average_precision"])
    assert got["calibration"]["ece"] == pytest.approx(validation["calibration_error"])
    assert got["calibration"]["edges"] == metrics.calibration_edges(p)
    assert got["auc_drop"] == pytest.approx(0.0, abs=1e-12) and got["passed"] is True
    assert got["auroc_se"] == pytest.approx(got["validation_auroc_se"])
