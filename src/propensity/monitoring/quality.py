"""Delayed quality: predictions of D-H scored against labels that matured by D.

Labels come from the label function training uses (`model.labels`, the same definition the
model was trained on), applied to histories(D) in record batches so that only the
predictions of D-H (ids and scores) are held in memory. Metrics: AUROC, average precision and a
10-bin calibration table (mean predicted vs observed rate, expected calibration error), each
next to the model version's validation figures from its model.json.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from propensity import storage
from propensity.config import Config
from propensity.model.labels import labels
from propensity.registry import store
from propensity.ui import kv

log = logging.getLogger(__name__)

CALIBRATION_BINS = 10
LABEL_READ_ROWS = 262_144  # histories(D) rows per record batch when deriving labels


def auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None with one class only."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return None
    order = np.argsort(p, kind="mergesort")
    sorted_p = np.asarray(p)[order]
    # Average ranks of tied scores.
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg_rank = first + (counts + 1) / 2.0
    ranks = np.empty(len(p), dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float | None:
    """Average precision: precision at each distinct threshold weighted by the recall gained."""
    y = np.asarray(y).astype(bool)
    pos = int(y.sum())
    if not pos:
        return None
    order = np.argsort(-np.asarray(p), kind="mergesort")
    ys, ps = y[order], np.asarray(p)[order]
    tp = np.cumsum(ys)
    last = np.r_[ps[1:] != ps[:-1], True]  # the last row of each group of tied scores
    tp, seen = tp[last], (np.arange(len(ys)) + 1)[last]
    precision = tp / seen
    recall_gain = np.diff(np.r_[0, tp]) / pos
    return float(np.sum(precision * recall_gain))


def calibration(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Mean predicted vs observed rate on 10 equal-width bins; expected calibration error."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.clip((p * CALIBRATION_BINS).astype(int), 0, CALIBRATION_BINS - 1)
    count = np.bincount(idx, minlength=CALIBRATION_BINS)
    sum_p = np.bincount(idx, weights=p, minlength=CALIBRATION_BINS)
    sum_y = np.bincount(idx, weights=y, minlength=CALIBRATION_BINS)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, rate = sum_p / count, sum_y / count
    ece = float(np.sum(count * np.abs(np.nan_to_num(mean_p - rate))) / max(len(p), 1))
    return {
        "bins": [
            {"low": i / CALIBRATION_BINS, "high": (i + 1) / CALIBRATION_BINS,
             "count": int(count[i]),
             "mean_predicted": None if not count[i] else float(mean_p[i]),
             "observed_rate": None if not count[i] else float(rate[i])}
            for i in range(CALIBRATION_BINS)
        ],
        "ece": ece,
        "mean_predicted": float(p.mean()) if len(p) else None,
        "observed_rate": float(y.mean()) if len(y) else None,
    }


def matured_labels(cfg: Config, ids: pa.Table, then: dt.date, now: dt.date) -> np.ndarray:
    """Labels [N, n_targets] of the profiles in `ids` (snapshot of `then`) from histories(now)."""
    out = np.zeros((ids.num_rows, len(cfg.targets)), dtype=np.float32)
    for uri in storage.parquet_files(storage.partition(cfg.uri("histories"), now)):
        pf = storage.open_parquet(uri)
        for rb in pf.iter_batches(batch_size=LABEL_READ_ROWS,
                                  columns=["profile_id", "ts", "event_type"]):
            # A profile lives in one histories row; a positive anywhere is the label.
            np.maximum(out, labels(ids, pa.Table.from_batches([rb]), cfg, then), out=out)
    return out


def evaluate(cfg: Config, day: dt.date) -> dict[str, Any]:
    """Realised quality of predictions(D-H) as of D: status `ok`, or `pending` with the reason."""
    then = day - dt.timedelta(days=cfg.horizon_days)
    predictions = storage.partition(cfg.uri("predictions"), then)
    histories = storage.partition(cfg.uri("histories"), day)
    result: dict[str, Any] = {"predictions_date": then.isoformat(), "labels_from": day.isoformat()}
    if not storage.is_complete(predictions):
        return {**result, "status": "pending", "reason": f"no complete predictions for {then}"}
    if not storage.is_complete(histories):
        return {**result, "status": "pending", "reason": f"no complete histories for {day}"}
    manifest = storage.read_json(storage.join(predictions, "manifest.json"))
    version = manifest["model"]["version"]
    meta = store.read_metadata(cfg, version)
    validation = meta.get("metrics", {})
    baseline = (meta.get("baseline") or {}).get("metrics", {})
    targets = [t for t in cfg.target_names if t in manifest["stats"]["scores"]]
    table = storage.read_parquet(predictions, columns=["profile_id", *targets])
    y = matured_labels(cfg, table.select(["profile_id"]), then, day)
    m = cfg.monitoring
    per_target = {}
    for target in targets:
        j = cfg.target_names.index(target)
        p = table.column(target).to_numpy().astype(np.float64)
        labels_j = y[:, j]
        auc, ap = auroc(labels_j, p), average_precision(labels_j, p)
        val = validation.get(target, {})
        val_auc = val.get("auroc")
        drop = None if auc is None or val_auc is None else val_auc - auc
        per_target[target] = {
            "rows": len(p),
            "positives": int(labels_j.sum()),
            "auroc": auc,
            "average_precision": ap,
            "validation_auroc": val_auc,
            "validation_average_precision": val.get("average_precision"),
            "validation_baseline_auroc": baseline.get(target, {}).get("auroc"),
            "auc_drop": drop,
            "threshold": m.auc_drop_threshold,
            "passed": None if drop is None else bool(drop <= m.auc_drop_threshold),
            "calibration": calibration(labels_j, p),
        }
    log.info("quality %s", kv(predictions=then, model=version,
                              **{t: r["auroc"] for t, r in per_target.items()}))
    return {**result, "status": "ok", "model_version": version, "targets": per_target}
