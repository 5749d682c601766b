"""Delayed quality: predictions of D-H scored against labels that matured by D.

Labels come from the label function training uses (`model.labels`, the same definition the
model was trained on), applied to histories(D) in record batches so that only the
predictions of D-H (ids and scores) are held in memory. Metrics come from `model.metrics`, the
definitions training records in model.json: AUROC (with its standard error), average precision,
log loss and a calibration table on bins at the reference's score quantiles (the validation
scores' own quantiles: the bins of the version's validation figure), each next to the model
version's validation figures. The AUROC drop alerts when it exceeds `auc_drop_threshold` and
also the level that the noise of the two AUROCs reaches at `monitoring.significance`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.stats import norm

from propensity import storage
from propensity.config import Config
from propensity.model import metrics, stats
from propensity.model.labels import LABEL_COLUMNS, labels
from propensity.predictions import read_manifest
from propensity.registry import store
from propensity.ui import kv

log = logging.getLogger(__name__)

MIN_CALIBRATION_BINS = 3  # fewer non-empty reference bins: calibrate on the scores' quantiles
LABEL_READ_ROWS = 262_144  # histories(D) rows per record batch when deriving labels


def matured_labels(cfg: Config, ids: pa.Table, then: dt.date, now: dt.date) -> np.ndarray:
    """Labels [N, n_targets] of the profiles in `ids` (snapshot of `then`) from histories(now)."""
    out = np.zeros((ids.num_rows, len(cfg.targets)), dtype=np.float32)
    for uri in storage.parquet_files(storage.partition(cfg.uri("histories"), now)):
        pf = storage.open_parquet(uri)
        for rb in pf.iter_batches(batch_size=LABEL_READ_ROWS,
                                  columns=LABEL_COLUMNS):
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
    manifest = read_manifest(predictions)
    version = manifest["model"]["version"]
    meta = store.read_metadata(cfg, version)
    validation = meta.get("metrics", {})
    baseline = (meta.get("baseline") or {}).get("metrics", {})
    targets = [t for t in cfg.target_names if t in manifest["stats"]["scores"]]
    table = storage.read_parquet(predictions, columns=["profile_id", *targets])
    y = matured_labels(cfg, table.select(["profile_id"]), then, day)
    reference_scores = store.read_reference(cfg, version).get("scores", {})
    per_target = {t: _target(cfg, table.column(t).to_numpy().astype(np.float64),
                             y[:, cfg.target_names.index(t)], validation.get(t, {}),
                             baseline.get(t, {}), reference_scores.get(t))
                  for t in targets}
    log.info("quality %s", kv(predictions=then, model=version,
                              **{t: r["auroc"] for t, r in per_target.items()}))
    return {**result, "status": "ok", "model_version": version, "targets": per_target}


def _target(cfg: Config, p: np.ndarray, y: np.ndarray, val: dict, baseline: dict,
            reference: dict | None) -> dict[str, Any]:
    """Realised figures of one target beside the validation ones, and the AUROC-drop check."""
    m = cfg.monitoring
    auc = metrics.auroc(y, p)
    positives = int(y.sum())
    se = metrics.auroc_se(auc, positives, len(y) - positives)
    val_auc = _finite(val.get("auroc"))
    val_se = metrics.auroc_se(val_auc, int(val.get("positives", 0)),
                              int(val.get("examples", 0)) - int(val.get("positives", 0)))
    drop = None if auc is None or val_auc is None else val_auc - auc
    noise = None
    if se is not None:
        # One-sided: only a drop alerts. Without the validation counts, its noise is left out.
        noise = float(norm.isf(m.significance) * np.hypot(se, val_se or 0.0))
    threshold = m.auc_drop_threshold if noise is None else max(m.auc_drop_threshold, noise)
    edges = (stats.quantile_groups(reference, metrics.CALIBRATION_BINS)
             if reference and sum(reference["counts"]) and len(reference["edges"]) > 21
             else None)  # a schema-1 reference (20 coarse bins): the scores' own quantiles
    calibration = metrics.calibration(y, p, edges)
    bins_from = "reference quantiles" if edges else "own quantiles (no fine reference)"
    if edges and sum(b["count"] > 0 for b in calibration["bins"]) < MIN_CALIBRATION_BINS:
        # The scores left the reference's range (e.g. a skewed model): the reference's bins
        # would show one or two points; the scores' own quantiles show the curve.
        calibration = metrics.calibration(y, p)
        bins_from = "own quantiles (the scores left the reference's range)"
    calibration["bins_from"] = bins_from
    return {
        "rows": len(p),
        "positives": positives,
        "auroc": auc,
        "auroc_se": se,
        "average_precision": metrics.average_precision(y, p),
        "log_loss": metrics.log_loss(y, p),
        "validation_auroc": val_auc,
        "validation_auroc_se": val_se,
        "validation_average_precision": _finite(val.get("average_precision")),
        "validation_calibration_error": _finite(val.get("calibration_error")),
        "validation_positives": val.get("positives"),
        "validation_examples": val.get("examples"),
        "validation_baseline_auroc": _finite(baseline.get("auroc")),
        "auc_drop": drop,
        "practical_threshold": m.auc_drop_threshold,
        "noise_threshold": noise,
        "threshold": threshold,
        "passed": None if drop is None else bool(drop <= threshold),
        "calibration": calibration,
    }


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and np.isfinite(x) else None
