"""The one definition of each quality metric, for training, the gate and monitoring alike.

- AUROC: Mann-Whitney with ties counted half (equals torchmetrics' and scikit-learn's);
  its standard error after Hanley & McNeil (1982), for intervals that shrink with the data.
- Average precision: precision at each distinct threshold weighted by the recall gained (the
  step form of scikit-learn and torchmetrics, no interpolation).
- Log loss: mean binary cross-entropy with scores clamped to [1e-7, 1 - 1e-7].
- Calibration: mean predicted against observed rate on `CALIBRATION_BINS` bins at the scores'
  quantiles, read off the fine score grid of `model.stats` (`calibration_edges`), so a model
  version's validation table and the monitor's realised table (binned at the reference's
  quantiles, the same validation scores) have the same bins; the expected calibration error is
  the count-weighted mean |predicted - observed| over those bins.

`metrics(scores, y, targets)` gives the per-target record the registry stores in model.json.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import rankdata

from propensity.model import stats

CALIBRATION_BINS = 10  # quantile bins of the calibration table and its error
LOG_LOSS_EPS = 1e-7


def auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve; None without both classes."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return None
    ranks = rankdata(np.asarray(p, dtype=np.float64))  # average ranks of ties
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auroc_se(auc: float | None, positives: int, negatives: int) -> float | None:
    """Standard error of an AUROC estimate from its class sizes (Hanley & McNeil 1982)."""
    if auc is None or not math.isfinite(auc) or positives < 1 or negatives < 1:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc)
           + (negatives - 1) * (q2 - auc * auc)) / (positives * negatives)
    return float(math.sqrt(max(var, 0.0)))


def average_precision(y: np.ndarray, p: np.ndarray) -> float | None:
    """Average precision; None without a positive."""
    y = np.asarray(y).astype(bool)
    pos = int(y.sum())
    if not pos:
        return None
    order = np.argsort(-np.asarray(p, dtype=np.float64), kind="mergesort")
    ys, ps = y[order], np.asarray(p, dtype=np.float64)[order]
    tp = np.cumsum(ys)
    last = np.r_[ps[1:] != ps[:-1], True]  # the last row of each group of tied scores
    tp, seen = tp[last], (np.arange(len(ys)) + 1)[last]
    return float(np.sum(tp / seen * np.diff(np.r_[0, tp]) / pos))


def log_loss(y: np.ndarray, p: np.ndarray) -> float | None:
    y = np.asarray(y, dtype=np.float64)
    if not len(y):
        return None
    pc = np.clip(np.asarray(p, dtype=np.float64), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))


def calibration_edges(p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[float]:
    """Calibration bin edges at the quantiles of `p`, on the fine score grid of `model.stats`
    (what the monitor reads off a reference's score histogram)."""
    return stats.quantile_groups(stats.score_histogram(p), bins)


def calibration(y: np.ndarray, p: np.ndarray, edges: list[float] | None = None) -> dict[str, Any]:
    """Mean predicted vs observed rate per bin of `edges` (default: `calibration_edges(p)`;
    values outside go to the end bins), with counts and the expected calibration error."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    edges = list(edges) if edges is not None else calibration_edges(p)
    e = np.asarray(edges, dtype=np.float64)
    k = len(e) - 1
    idx = np.clip(np.searchsorted(e, p, side="right") - 1, 0, k - 1)
    count = np.bincount(idx, minlength=k)
    sum_p = np.bincount(idx, weights=p, minlength=k)
    sum_y = np.bincount(idx, weights=y, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, rate = sum_p / count, sum_y / count
    ece = float(np.sum(count * np.abs(np.nan_to_num(mean_p - rate))) / len(p)) if len(p) else None
    return {
        "edges": edges,
        "bins": [
            {"low": float(e[i]), "high": float(e[i + 1]), "count": int(count[i]),
             "mean_predicted": None if not count[i] else float(mean_p[i]),
             "observed_rate": None if not count[i] else float(rate[i])}
            for i in range(k)
        ],
        "ece": ece,
        "mean_predicted": float(p.mean()) if len(p) else None,
        "observed_rate": float(y.mean()) if len(y) else None,
    }


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def metrics(scores: np.ndarray, y: np.ndarray, targets: list[str]) -> dict[str, dict]:
    """Per target (column j of `scores` and `y`): AUROC, average precision, log loss, expected
    calibration error (quantile bins), positives and count. AUROC and average precision are NaN
    when only one class is present, the others NaN without examples."""
    out = {}
    for j, name in enumerate(targets):
        p = np.asarray(scores[:, j], dtype=np.float64)
        t = np.asarray(y[:, j], dtype=np.float64)
        cal = calibration(t, p) if len(t) else {"ece": None}
        out[name] = {
            "auroc": _nan(auroc(t, p)),
            "average_precision": _nan(average_precision(t, p) if 0 < t.sum() < len(t) else None),
            "log_loss": _nan(log_loss(t, p)),
            "calibration_error": _nan(cal["ece"]),
            "calibration_bins": CALIBRATION_BINS,
            "positives": int(t.sum()),
            "examples": len(t),
        }
    return out
