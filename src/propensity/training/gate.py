"""Validation metrics and the gate a candidate must pass to become the champion.

All comparisons are on the same validation rows (the freshest snapshot pair's), per target:
1. value:    the candidate's AUROC is at least `gate.min_auc`;
2. baseline: it does not lose to the logistic-regression baseline fit on the same examples:
             rejected when its lift over the baseline is below `gate.min_lift_over_baseline`
             and the paired test says so (one-sided p of "lift < min_lift" below
             `gate.significance`). At parity a point comparison would reject half of all
             candidates by the noise of the validation rows alone (measured: the LSTM and the
             regression within 0.001 of each other at 20k and 80k profiles, docs/train.md);
3. champion: it is not worse than the champion by more than `gate.max_auc_drop` *with
             statistical significance*: a paired DeLong test of the two AUROCs on the same rows
             must reject "no drop" at `gate.significance` (one-sided). A drop inside the noise
             of a small validation set does not block a candidate; a clear one does.
Every comparison records its difference, standard error and (1 - significance) interval.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import norm, rankdata

from propensity.config import GateConfig
from propensity.errors import ExitCode, PropensityError
from propensity.model.batches import EncodedHistories, length_buckets
from propensity.model.metrics import auroc


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


def paired_auc_test(y: np.ndarray, a: np.ndarray, b: np.ndarray, level: float = 0.05) -> dict:
    """DeLong's test of AUROC(a) - AUROC(b) on the same labelled rows (DeLong et al. 1988, in
    the O(n log n) form of Sun & Xu 2014). Written here because neither scipy nor scikit-learn
    has a paired AUROC test. Returns the two AUROCs, their difference, its standard error, the
    two-sided (1 - level) interval and the one-sided p-value of "a is not below b"."""
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return {"auc_a": math.nan, "auc_b": math.nan, "difference": math.nan, "se": math.nan,
                "interval": [math.nan, math.nan], "p_value_a_below_b": math.nan}
    scores = np.vstack([a, b]).astype(np.float64)
    pos, neg = scores[:, y], scores[:, ~y]
    tx, ty = rankdata(pos, axis=1), rankdata(neg, axis=1)
    tz = rankdata(np.hstack([pos, neg]), axis=1)
    auc = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v01 = (tz[:, :m] - tx) / n  # per positive: share of negatives scored below it
    v10 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives scored above it
    cov = (np.cov(v01) if m > 1 else np.zeros((2, 2))) / m + (
        np.cov(v10) if n > 1 else np.zeros((2, 2))) / n
    diff = float(auc[0] - auc[1])
    se = float(math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    z = norm.ppf(1 - level / 2)
    if se > 0:
        p_below = float(norm.cdf(diff / se))  # small when a is clearly below b
    else:
        p_below = 0.0 if diff < 0 else 1.0
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": diff, "se": se,
            "interval": [diff - z * se, diff + z * se], "p_value_a_below_b": p_below}


def _r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _recorded(test: dict) -> dict:
    """A paired test's result as model.json keeps it (rounded, NaN as null)."""
    return {k: [_r(x) for x in v] if isinstance(v, list) else _r(v) for k, v in test.items()}


def decide(gate: GateConfig, y: np.ndarray, targets: list[str], candidate: np.ndarray,
           baseline: np.ndarray | None, champion: np.ndarray | None,
           champion_targets: list[str] | None = None) -> dict:
    """The gate decision with its numbers, from scores on the same validation rows.

    `candidate` and `baseline` are [N, len(targets)]; `champion` is [N, len(champion_targets)]
    (a target the champion does not predict is compared with the baseline only). Returns
    {"decision", "reasons", "candidate_auc", "baseline_auc", "champion_auc", "comparisons",
    and the thresholds}."""
    reasons, comparisons = [], {}
    cand_auc, base_auc, champ_auc = {}, {}, {}
    for j, target in enumerate(targets):
        comparisons[target] = {}
        lab = y[:, j]
        auc = auroc(lab, candidate[:, j])
        cand_auc[target] = math.nan if auc is None else auc
        if auc is None:
            reasons.append(f"{target}: AUROC undefined (validation set has one class only)")
            continue
        if auc < gate.min_auc:
            reasons.append(f"{target}: AUROC {auc:.4f} < min_auc {gate.min_auc}")
        if baseline is not None:
            vs = paired_auc_test(lab, candidate[:, j], baseline[:, j], gate.significance)
            base_auc[target] = vs["auc_b"]
            comparisons[target]["baseline"] = _recorded(vs)
            lift = vs["difference"]
            shortfall = gate.min_lift_over_baseline - lift
            p_short = float(norm.cdf(-shortfall / vs["se"])) if vs["se"] > 0 else float(
                shortfall <= 0)
            comparisons[target]["baseline"]["p_value_below_min_lift"] = _r(p_short)
            if shortfall > 0 and p_short < gate.significance:
                reasons.append(
                    f"{target}: AUROC {auc:.4f} does not beat the baseline's {vs['auc_b']:.4f} "
                    f"by min_lift_over_baseline {gate.min_lift_over_baseline} (lift "
                    f"{lift:+.4f}, {1 - gate.significance:.0%} interval "
                    f"[{vs['interval'][0]:+.4f}, {vs['interval'][1]:+.4f}], paired DeLong "
                    f"p={p_short:.3g} < {gate.significance})"
                )
        if champion is not None and champion_targets and target in champion_targets:
            c = champion[:, champion_targets.index(target)]
            vs = paired_auc_test(lab, candidate[:, j], c, gate.significance)
            champ_auc[target] = vs["auc_b"]
            comparisons[target]["champion"] = _recorded(vs)
            drop = -vs["difference"]
            significant = vs["p_value_a_below_b"] < gate.significance
            comparisons[target]["champion"]["significant_drop"] = bool(
                drop > gate.max_auc_drop and significant)
            if drop > gate.max_auc_drop and significant:
                reasons.append(
                    f"{target}: AUROC {auc:.4f} is {drop:.4f} below the champion's "
                    f"{vs['auc_b']:.4f} (max_auc_drop {gate.max_auc_drop}; paired DeLong "
                    f"p={vs['p_value_a_below_b']:.3g} < {gate.significance})"
                )
    return {
        "decision": "rejected" if reasons else "approved",
        "reasons": reasons,
        "candidate_auc": cand_auc,
        "baseline_auc": base_auc or None,
        "champion_auc": champ_auc or None,
        "comparisons": comparisons,
        "validation_rows": int(len(y)),
        "min_auc": gate.min_auc,
        "min_lift_over_baseline": gate.min_lift_over_baseline,
        "max_auc_drop": gate.max_auc_drop,
        "significance": gate.significance,
        "test": "paired DeLong (Sun & Xu 2014), one-sided for a drop",
    }
