"""Drift checks: today's summary (from the predictions manifest) against the model's reference.

Every check compares two `stats` summaries, reports both sample sizes, and fails only when its
statistic exceeds BOTH the practical threshold of the config and the level that the sampling
noise of the two samples reaches with probability `monitoring.significance` under no drift
(`noise_threshold`, with the p-value beside it). A small reference widens the noise level, so
it does not cry wolf; a large one leaves the practical threshold in charge.
- scores per target: population stability index (PSI) on `monitoring.score_bins` bins at the
  reference's own quantiles (regrouped from the summaries' fine bins). Under no drift,
  PSI / (1/n_ref + 1/n_cur) is approximately chi-square with bins - 1 degrees of freedom;
- event-type mix: Jensen-Shannon distance (base 2, so in [0, 1]) of the event-type counts, its
  noise level from the same chi-square approximation (JSD ~ chi2 (1/n_ref + 1/n_cur) / 8);
- numeric inputs (history length, days since last event, history span, price): the
  Kolmogorov-Smirnov statistic of the binned distributions (the largest CDF gap at a bin edge,
  a lower bound of the exact KS), with the asymptotic two-sample KS p-value; reported with the
  binned Wasserstein distance for reading;
- null shares of article/brand/category/price: absolute change of the share (two-proportion
  z-test);
- today's events (`day_events`): each event type's share of the day against the reference's,
  as a ratio (a behaviour shift: more or fewer orders);
- the histories' window counters (histories version 2, the profile context the model reads):
  the KS check of each counter histogram (`input_ks:counter:<name>`; days since first seen,
  window events, window orders, order value), its sample sizes the rows with known counters on
  each side, and the share of rows with unknown counters (`counters_unknown_share`, a
  two-proportion check like the null shares).
Sample sizes of the histories' checks are profiles (rows): events of one profile are not
independent draws.

The counters are sums and extremes over the retention window, and on a young snapshot chain
that window is cut by the chain's own start: until the chain is `retention_days` old, every
day's window is a day longer than the last, so tenure (days since first seen) grows daily and so
do the window's events, orders and order value, with nothing wrong. Their distributions are
stationary only once every window is full. So the four counter histograms are compared only when
every day of the reference has a profile first seen on the first or second day of its window
(its longest tenure at least `retention_days` - 1): that reference's chain was full, and D, later
on the same chain, is too. Before that they are skipped with the reason and the reference's
longest tenure. The test is on the reference alone, never on D: a broken merge that resets
tenure on D must fail its check, not skip it. The unknown share does not depend on the window's
length and is always compared.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import chi2, kstwobign, norm

from propensity.config import Config
from propensity.model import stats

PSI_FLOOR = 1e-4  # share given to an empty bin, so that PSI stays finite
MIN_EXPECTED = 5  # a type share is compared only where the reference expects this many today


def _shares(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total else c


def psi(reference_counts, current_counts) -> float:
    """Population stability index sum((c - r) * ln(c / r)) of two binned distributions."""
    r = np.maximum(_shares(reference_counts), PSI_FLOOR)
    c = np.maximum(_shares(current_counts), PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_noise(bins: int, n_ref: int, n_cur: int, significance: float) -> tuple[float, float]:
    """(scale, critical PSI): PSI / scale is about chi-square(bins - 1) under no drift."""
    scale = 1 / n_ref + 1 / n_cur
    return scale, float(chi2.isf(significance, max(bins - 1, 1)) * scale)


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


def ks_noise(n_ref: int, n_cur: int, value: float, significance: float) -> tuple[float, float]:
    """(critical KS, p-value of `value`) of the asymptotic two-sample KS test."""
    n_eff = n_ref * n_cur / (n_ref + n_cur)
    return (float(kstwobign.isf(significance) / math.sqrt(n_eff)),
            float(kstwobign.sf(value * math.sqrt(n_eff))))


def proportion_noise(p_ref: float, n_ref: int, p_cur: float, n_cur: int,
                     significance: float) -> tuple[float, float]:
    """(critical |difference|, two-sided p-value) of two proportions (pooled z-test)."""
    pooled = (p_ref * n_ref + p_cur * n_cur) / (n_ref + n_cur)
    se = math.sqrt(max(pooled * (1 - pooled), 0.0) * (1 / n_ref + 1 / n_cur))
    if se == 0:
        return 0.0, 1.0 if p_ref == p_cur else 0.0
    return float(norm.isf(significance / 2) * se), float(2 * norm.sf(abs(p_cur - p_ref) / se))


def wasserstein_binned(edges, reference_counts, current_counts) -> float:
    """Earth mover's distance of two histograms (mass at bin centres), in the values' unit."""
    e = np.asarray(edges, dtype=np.float64)
    gaps = np.diff((e[:-1] + e[1:]) / 2)
    cr, cc = np.cumsum(_shares(reference_counts)), np.cumsum(_shares(current_counts))
    return float(np.sum(np.abs(cr - cc)[:-1] * gaps))


def check(name: str, group: str, statistic: str, value: float | None, practical: float,
          noise: float | None = None, p_value: float | None = None, n: int | None = None,
          reference_n: int | None = None, detail: dict | None = None) -> dict[str, Any]:
    """One check record. It fails when `value` exceeds its threshold: the practical threshold,
    or the noise level of the two samples where that is higher. `value` None: not computed
    (the reason in `detail["skipped"]`)."""
    threshold = practical if noise is None else max(practical, noise)
    return {
        "name": name,
        "group": group,
        "statistic": statistic,
        "value": None if value is None else round(float(value), 6),
        "threshold": round(float(threshold), 6),
        "practical_threshold": practical,
        "noise_threshold": None if noise is None else round(float(noise), 6),
        "p_value": None if p_value is None else float(p_value),
        "n": n,
        "reference_n": reference_n,
        "passed": None if value is None else bool(value <= threshold),
        "detail": detail or {},
    }


def _skipped(name, group, statistic, practical, reason, n=None, reference_n=None):
    return check(name, group, statistic, None, practical, n=n, reference_n=reference_n,
                 detail={"skipped": reason})


def _grid(ref: dict | None, hist: dict) -> list[float] | None:
    """The common bin grid of two non-empty histograms (None: they cannot be compared)."""
    if ref is None or not sum(ref["counts"]) or not sum(hist["counts"]):
        return None
    return stats.common_grid(ref["edges"], hist["edges"])


def score_check(target: str, ref: dict | None, hist: dict, cfg: Config) -> dict[str, Any]:
    """PSI of today's scores on bins at the reference's quantiles, with its noise level."""
    m = cfg.monitoring
    name = f"score_psi:{target}"
    grid = _grid(ref, hist)
    if grid is None:
        return _skipped(name, "scores", "psi", m.psi_threshold,
                        "no comparable reference histogram", hist["n"], ref and ref["n"])
    ref_grid = {"edges": grid, "counts": stats.regroup(ref, grid)}
    edges = stats.quantile_groups(ref_grid, m.score_bins)
    r = stats.regroup(ref_grid, edges)
    c = stats.regroup({"edges": grid, "counts": stats.regroup(hist, grid)}, edges)
    value = psi(r, c)
    scale, noise = psi_noise(len(r), int(r.sum()), int(c.sum()), m.significance)
    return check(name, "scores", "psi", value, m.psi_threshold, noise,
                 float(chi2.sf(value / scale, max(len(r) - 1, 1))), int(c.sum()), int(r.sum()),
                 {"bins": len(r), "edges": [round(e, 4) for e in edges],
                  "reference_counts": r.tolist(), "counts": c.tolist(),
                  "mean": hist["mean"], "reference_mean": ref["mean"]})


def _ks_check(name: str, group: str, ref: dict | None, hist: dict, practical: float,
              significance: float, n: int | None = None, reference_n: int | None = None):
    n = hist["n"] if n is None else n
    reference_n = (ref or {}).get("n") if reference_n is None else reference_n
    grid = _grid(ref, hist)
    if grid is None or not n or not reference_n:
        return _skipped(name, group, "ks", practical, "no comparable reference histogram", n,
                        reference_n)
    r, c = stats.regroup(ref, grid), stats.regroup(hist, grid)
    value = ks_binned(r, c)
    noise, p = ks_noise(reference_n, n, value, significance)
    return check(name, group, "ks", value, practical, noise, p, n, reference_n,
                 {"wasserstein": wasserstein_binned(grid, r, c),
                  "median": hist["quantiles"]["p50"],
                  "reference_median": ref["quantiles"]["p50"]})


def checks(current: dict, reference: dict, cfg: Config) -> list[dict[str, Any]]:
    """Every drift check of `current` against `reference` (the part of the reference to compare
    with: the job picks the same weekday's). `passed` is None when a check cannot be computed
    (no data, or bins that cannot be regrouped onto each other), with the reason in `detail`."""
    m = cfg.monitoring
    n, n_ref = current["rows"], reference.get("rows", 0)
    out = [score_check(t, reference.get("scores", {}).get(t), hist, cfg)
           for t, hist in current["scores"].items()]

    ref_types = reference.get("event_types", {}).get("counts", {})
    cur_types = current["event_types"]["counts"]
    names = sorted(set(ref_types) | set(cur_types))
    if sum(ref_types.values()) and sum(cur_types.values()) and n and n_ref:
        value = js_distance(
            [ref_types.get(k, 0) for k in names], [cur_types.get(k, 0) for k in names]
        )
        scale = 1 / n_ref + 1 / n
        noise = math.sqrt(chi2.isf(m.significance, len(names) - 1) * scale / 8 / math.log(2))
        p = float(chi2.sf(8 * math.log(2) * value**2 / scale, len(names) - 1))
        out.append(check("event_type_mix", "inputs", "jensen_shannon", value, m.js_threshold,
                         noise, p, n, n_ref,
                         {"unknown_type_share": current["unknown_type_share"],
                          "reference_unknown_type_share": reference.get("unknown_type_share")}))
    else:
        out.append(_skipped("event_type_mix", "inputs", "jensen_shannon", m.js_threshold,
                            "no events", n, n_ref))

    for feature, hist in current["numeric"].items():
        ref = reference.get("numeric", {}).get(feature)
        # Prices are per event; their noise is counted in profiles (events of one profile repeat
        # its articles), like every other input.
        out.append(_ks_check(f"input_ks:{feature}", "inputs", ref, hist, m.ks_threshold,
                             m.significance, n, n_ref))

    for field, share in current["null_shares"].items():
        ref = reference.get("null_shares", {}).get(field)
        if ref is None or not n or not n_ref:
            out.append(_skipped(f"null_share:{field}", "inputs", "abs_change",
                                m.null_share_threshold, "no reference share", n, n_ref))
            continue
        noise, p = proportion_noise(ref, n_ref, share, n, m.significance)
        out.append(check(f"null_share:{field}", "inputs", "abs_change", abs(share - ref),
                         m.null_share_threshold, noise, p, n, n_ref,
                         {"share": share, "reference_share": ref}))
    return out + counter_checks(current, reference, cfg)


def _unfilled_window(reference: dict, retention_days: int) -> str | None:
    """Why the reference's counters describe windows not yet full (a young snapshot chain),
    or None when every day of it reaches the whole retention window."""
    parts = list((reference.get("by_day") or {}).values()) or [reference]
    tenures = [part["counters"]["days_since_first_seen"] for part in parts]
    # A day without known counters adds no row to the histograms: it cannot make them young.
    longest = min(t["max"] for t in tenures if t["n"])
    if longest >= retention_days - 1:
        return None
    return (f"young snapshot chain: the reference's longest tenure is {longest:.1f} days, under "
            f"retention_days {retention_days}, so its windows were not full and the counters "
            "still grow daily")


def counter_checks(current: dict, reference: dict, cfg: Config) -> list[dict[str, Any]]:
    """The checks of the histories' window counters: `counters_unknown_share`, then the KS
    check of each counter histogram over the rows with known counters. A summary without
    `counters` (made before them) skips them all with the reason. Where neither side has a row
    with known counters (a chain of version-1 snapshots) only the unknown share is reported:
    there is no distribution to compare, and the model reads only the unknown flag."""
    m = cfg.monitoring
    cur, ref = current.get("counters"), reference.get("counters")
    n, n_ref = current["rows"], reference.get("rows", 0)
    names = [f"input_ks:counter:{k}" for k in stats.counter_edges()]
    missing = None
    if ref is None:
        missing = ("the reference has no counter statistics (a model trained before the "
                   "counters): retrain to get them")
    elif cur is None:
        missing = "today's summary has no counter statistics (scored before the counters)"
    elif not n or not n_ref:
        missing = "no profiles"
    if missing:
        return [_skipped("counters_unknown_share", "inputs", "abs_change",
                         m.null_share_threshold, missing, n, n_ref),
                *(_skipped(k, "inputs", "ks", m.ks_threshold, missing, n, n_ref) for k in names)]
    share, ref_share = cur["unknown_share"], ref["unknown_share"]
    noise, p = proportion_noise(ref_share, n_ref, share, n, m.significance)
    out = [check("counters_unknown_share", "inputs", "abs_change", abs(share - ref_share),
                 m.null_share_threshold, noise, p, n, n_ref,
                 {"share": share, "reference_share": ref_share, "unknown": cur["unknown"],
                  "reference_unknown": ref["unknown"]})]
    known, ref_known = n - cur["unknown"], n_ref - ref["unknown"]
    if not known and not ref_known:
        return out
    if not ref_known:
        reason = "no row with known counters in the reference"
    elif not known:
        reason = "no row with known counters today"
    else:
        reason = _unfilled_window(reference, cfg.histories.retention_days)
    for name, counter in zip(names, stats.counter_edges()):
        if reason:
            out.append(_skipped(name, "inputs", "ks", m.ks_threshold, reason, known, ref_known))
        else:
            out.append(_ks_check(name, "inputs", ref[counter], cur[counter], m.ks_threshold,
                                 m.significance, known, ref_known))
    return out


def day_type_checks(current: dict, reference: dict, cfg: Config) -> list[dict[str, Any]]:
    """Each event type's share of today's events against the reference's days (all of them: the
    mix hardly depends on the weekday), as |log ratio|: a change by the factor
    `monitoring.type_ratio_threshold` either way fails, where it is also beyond the noise of the
    two shares (events as the unit; the practical factor guards against their clustering in
    sessions). Types the reference expects fewer than MIN_EXPECTED times today are not compared."""
    m = cfg.monitoring
    cur, ref = current.get("day_events"), reference.get("day_events")
    if not cur or not ref or not cur["events"] or not ref["events"]:
        return []
    out = []
    practical = math.log(m.type_ratio_threshold)
    n, n_ref = cur["events"], ref["events"]
    for t in sorted(set(ref["type_counts"]) | set(cur["type_counts"])):
        r = ref["type_counts"].get(t, 0) / ref["events"]
        c = cur["type_counts"].get(t, 0) / cur["events"]
        if r * cur["events"] < MIN_EXPECTED:
            continue
        # |log ratio|, a zero share floored at half an event so that an outage stays finite.
        c_floor = max(c, 0.5 / cur["events"])
        value = abs(math.log(c_floor / r))
        crit, p = proportion_noise(r, n_ref, c, n, m.significance)
        # The noise level on the side of the change (a fall can go further than a rise).
        edge = r - crit if c < r else r + crit
        noise = abs(math.log(max(edge, 0.5 / cur["events"]) / r))
        out.append(check(f"type_share_today:{t}", "events", "abs_log_ratio", value, practical,
                         noise, p, n, n_ref,
                         {"share": c, "reference_share": r, "ratio": c / r,
                          "count": cur["type_counts"].get(t, 0)}))
    return out
