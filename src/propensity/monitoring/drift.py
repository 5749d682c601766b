"""Drift checks: today's summary (from the predictions manifest) against the model's reference.

Every check compares two `stats` summaries on the same fixed bins:
- scores per target: population stability index (PSI) of the binned score distribution;
- event-type mix: Jensen-Shannon distance (base 2, so in [0, 1]) of the event-type counts;
- numeric inputs (history length, days since last event, history span, price): the
  Kolmogorov-Smirnov statistic of the binned distributions (the largest CDF gap at a bin edge,
  a lower bound of the exact KS; reported with the binned Wasserstein distance for reading);
- null shares of article/brand/category/price: absolute change of the share.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from propensity.config import Config

PSI_FLOOR = 1e-4  # share given to an empty bin, so that PSI stays finite


def _shares(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total else c


def psi(reference_counts, current_counts) -> float:
    """Population stability index sum((c - r) * ln(c / r)) of two binned distributions."""
    r = np.maximum(_shares(reference_counts), PSI_FLOOR)
    c = np.maximum(_shares(current_counts), PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference_counts, current_counts) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): 0 same, 1 disjoint."""
    p, q = _shares(reference_counts), _shares(current_counts)
    m = (p + q) / 2

    def kl(a):
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def ks_binned(reference_counts, current_counts) -> float:
    """Largest gap between the two CDFs at the bin edges."""
    cr, cc = np.cumsum(_shares(reference_counts)), np.cumsum(_shares(current_counts))
    return float(np.max(np.abs(cr - cc))) if len(cr) else 0.0


def wasserstein_binned(edges, reference_counts, current_counts) -> float:
    """Earth mover's distance of two histograms (mass at bin centres), in the values' unit."""
    e = np.asarray(edges, dtype=np.float64)
    gaps = np.diff((e[:-1] + e[1:]) / 2)
    cr, cc = np.cumsum(_shares(reference_counts)), np.cumsum(_shares(current_counts))
    return float(np.sum(np.abs(cr - cc)[:-1] * gaps))


def _check(name, group, statistic, value, threshold, detail=None) -> dict[str, Any]:
    return {
        "name": name,
        "group": group,
        "statistic": statistic,
        "value": None if value is None else round(float(value), 6),
        "threshold": threshold,
        "passed": None if value is None else bool(value <= threshold),
        "detail": detail or {},
    }


def _empty(hist) -> bool:
    return sum(hist["counts"]) == 0


def _comparable(ref: dict | None, hist: dict) -> bool:
    """Two histograms can be compared: both present, non-empty and on the same bin edges."""
    return ref is not None and ref["edges"] == hist["edges"] and not _empty(ref) and not _empty(hist)


def _histogram_check(name: str, group: str, statistic: str, ref: dict | None, hist: dict,
                     threshold: float, value_and_detail) -> dict[str, Any]:
    """One check of a histogram against its reference; skipped when they cannot be compared.
    `value_and_detail(ref, hist)` gives the statistic and the detail to report beside it."""
    if not _comparable(ref, hist):
        return _check(name, group, statistic, None, threshold,
                      {"skipped": "no comparable reference histogram"})
    value, detail = value_and_detail(ref, hist)
    return _check(name, group, statistic, value, threshold, detail)


def checks(current: dict, reference: dict, cfg: Config) -> list[dict[str, Any]]:
    """Every drift check of `current` against `reference`; `passed` is None when a check
    cannot be computed (no data, or bins that differ), with the reason in `detail`."""
    m = cfg.monitoring
    out = []
    for target, hist in current["scores"].items():
        out.append(_histogram_check(
            f"score_psi:{target}", "scores", "psi", reference.get("scores", {}).get(target), hist,
            m.psi_threshold,
            lambda ref, cur: (psi(ref["counts"], cur["counts"]),
                              {"mean": cur["mean"], "reference_mean": ref["mean"]}),
        ))

    ref_types = reference.get("event_types", {}).get("counts", {})
    cur_types = current["event_types"]["counts"]
    names = sorted(set(ref_types) | set(cur_types))
    if sum(ref_types.values()) and sum(cur_types.values()):
        value = js_distance(
            [ref_types.get(k, 0) for k in names], [cur_types.get(k, 0) for k in names]
        )
    else:
        value = None
    out.append(_check("event_type_mix", "inputs", "jensen_shannon", value, m.js_threshold,
                      {"unknown_type_share": current["unknown_type_share"],
                       "reference_unknown_type_share": reference.get("unknown_type_share")}))

    for feature, hist in current["numeric"].items():
        out.append(_histogram_check(
            f"input_ks:{feature}", "inputs", "ks", reference.get("numeric", {}).get(feature), hist,
            m.ks_threshold,
            lambda ref, cur: (ks_binned(ref["counts"], cur["counts"]),
                              {"wasserstein": wasserstein_binned(cur["edges"], ref["counts"],
                                                                 cur["counts"]),
                               "median": cur["quantiles"]["p50"],
                               "reference_median": ref["quantiles"]["p50"]}),
        ))

    for field, share in current["null_shares"].items():
        ref = reference.get("null_shares", {}).get(field)
        value = None if ref is None else abs(share - ref)
        out.append(_check(f"null_share:{field}", "inputs", "abs_change", value,
                          m.null_share_threshold, {"share": share, "reference_share": ref}))
    return out
