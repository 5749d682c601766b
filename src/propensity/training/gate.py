"""Validation metrics and the AUC gate between a candidate and the champion.

The candidate is approved only if, for every target, its validation AUROC is at least
`gate.min_auc` and (when a champion exists and predicts that target) not below the champion's
AUROC on the same validation examples by more than `gate.max_auc_drop`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from propensity.errors import ExitCode, PropensityError
from propensity.model.batches import EncodedHistories, length_buckets


class GateRejected(PropensityError):
    """The candidate failed the gate; it is stored as a version but the champion is unchanged."""

    exit_code = ExitCode.GATE_REJECTED


@torch.no_grad()
def predict(
    model, encoded: EncodedHistories, rows: np.ndarray, batch_size: int, device="cpu"
) -> np.ndarray:
    """Scores (sigmoid of logits) [len(rows), n_targets], in the order of `rows`."""
    model.eval().to(device)
    out = np.zeros((len(rows), len(model.targets)), dtype=np.float32)
    for part in length_buckets(encoded.lengths[rows], batch_size):
        batch = encoded.batch(rows[part]).to(device)
        out[part] = torch.sigmoid(model(batch).float()).cpu().numpy()
    return out


def metrics(scores: np.ndarray, y: np.ndarray, targets: list[str]) -> dict[str, dict]:
    """Per target: AUROC, average precision, log loss, expected calibration error (15 bins),
    positives and count. AUROC and average precision are NaN when only one class is present."""
    from torchmetrics.functional.classification import (
        binary_auroc,
        binary_average_precision,
        binary_calibration_error,
    )

    out = {}
    for j, name in enumerate(targets):
        p = torch.from_numpy(np.ascontiguousarray(scores[:, j], dtype=np.float32))
        t = torch.from_numpy(np.ascontiguousarray(y[:, j])).long()
        both = 0 < int(t.sum()) < len(t)
        some = len(t) > 0
        pc = p.double().clamp(1e-7, 1 - 1e-7)
        log_loss = -(t * pc.log() + (1 - t) * (1 - pc).log()).mean()
        out[name] = {
            "auroc": float(binary_auroc(p, t)) if both else math.nan,
            "average_precision": float(binary_average_precision(p, t)) if both else math.nan,
            "log_loss": float(log_loss) if some else math.nan,
            "calibration_error": (
                float(binary_calibration_error(p, t, n_bins=15)) if some else math.nan
            ),
            "positives": int(t.sum()),
            "examples": int(len(t)),
        }
    return out


def decide(gate_cfg, candidate: dict[str, dict], champion: dict[str, dict] | None) -> dict:
    """The gate decision with its numbers: {"decision": "approved"|"rejected", "reasons": [...],
    "candidate_auc", "champion_auc", "min_auc", "max_auc_drop"}."""
    reasons = []
    cand_auc = {t: m["auroc"] for t, m in candidate.items()}
    champ_auc = {t: m["auroc"] for t, m in (champion or {}).items()}
    for target, auc in cand_auc.items():
        if math.isnan(auc):
            reasons.append(f"{target}: AUROC undefined (validation set has one class only)")
        elif auc < gate_cfg.min_auc:
            reasons.append(f"{target}: AUROC {auc:.4f} < min_auc {gate_cfg.min_auc}")
        base = champ_auc.get(target)
        if base is not None and not math.isnan(base) and not math.isnan(auc):
            if auc < base - gate_cfg.max_auc_drop:
                reasons.append(
                    f"{target}: AUROC {auc:.4f} is {base - auc:.4f} below the champion's "
                    f"{base:.4f} (max_auc_drop {gate_cfg.max_auc_drop})"
                )
    return {
        "decision": "rejected" if reasons else "approved",
        "reasons": reasons,
        "candidate_auc": cand_auc,
        "champion_auc": champ_auc or None,
        "min_auc": gate_cfg.min_auc,
        "max_auc_drop": gate_cfg.max_auc_drop,
    }
