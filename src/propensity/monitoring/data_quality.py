"""Data-quality checks of day D: did tracking deliver what it usually does?

Two sources: the aggregation's run summary (histories/dt=D/_summary.json, read through storage:
records in, quarantined by reason, unknown event types) and the `day_events` of today's summary
(D's own events inside the histories) against those of the model's reference. A failed check
here is a DATA-QUALITY alert (exit 11 under its own name, `data_quality_alert` in the result):
the input is broken, so the scores of D are not to be trusted, and a retrain on it would learn
the fault. Checks (each with its sample size, and a noise level where counts can be noisy):
- quarantine_share: quarantined / records read (a malformed feed);
- unknown_type_share: records with an event type outside the vocabulary / valid records;
- tracking_outage:<type>: the share of an event type lost today against the reference's share
  (a type that stops being tracked loses all of it);
- null_share_today:<field>: absolute change of a field's null share among today's events (a
  field renamed upstream arrives as null);
- price_scale_today: |log| of today's median price over the reference's (prices in cents);
- active_profiles_today / events_per_profile_today: |log| of the ratio of today's share of
  profiles with an event, and of their events each, to the reference's (a lost feed shard, a
  double delivery).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from propensity import storage
from propensity.config import Config
from propensity.monitoring.drift import MIN_EXPECTED, check, proportion_noise

SUMMARY = "_summary.json"  # the aggregation's run summary beside histories(D)
GROUP = "data_quality"


def run_summary(cfg: Config, day: dt.date) -> dict[str, Any] | None:
    """The aggregation's run summary of D, or None where histories(D) has none."""
    uri = storage.join(storage.partition(cfg.uri("histories"), day), SUMMARY)
    return storage.read_json(uri) if storage.exists(uri) else None


def _skip(name: str, statistic: str, practical: float, reason: str) -> dict[str, Any]:
    return check(name, GROUP, statistic, None, practical, detail={"skipped": reason})


NONE_LEFT = 99.0  # |log ratio| reported when one side is zero (finite, so JSON keeps it)


def _log_ratio(a: float, b: float) -> float:
    return abs(math.log(a / b)) if a > 0 and b > 0 else NONE_LEFT


def intake_checks(summary: dict[str, Any] | None, cfg: Config) -> list[dict[str, Any]]:
    """Checks of the records that came in on D (from the aggregation's run summary)."""
    m = cfg.monitoring
    if summary is None:
        return [_skip("quarantine_share", "share", m.quarantine_share_threshold,
                      "no aggregation summary beside histories(D)")]
    read, valid = summary.get("events_read", 0), summary.get("events_valid", 0)
    quarantined = summary.get("quarantined_total", 0)
    unknown = summary.get("unknown_event_types", 0)
    return [
        check("quarantine_share", GROUP, "share", quarantined / read if read else None,
              m.quarantine_share_threshold, n=read,
              detail={"records_read": read, "records_valid": valid,
                      "quarantined": summary.get("quarantined", {}),
                      "quarantined_total": quarantined}),
        check("unknown_type_share", GROUP, "share", unknown / valid if valid else None,
              m.unknown_type_share_threshold, n=valid, detail={"unknown_event_types": unknown}),
    ]


def day_checks(current: dict[str, Any], reference: dict[str, Any],
               cfg: Config) -> list[dict[str, Any]]:
    """Checks of D's own events against the reference's days (all of them: what tracking
    delivers hardly depends on the weekday, and more days give a tighter reference)."""
    m = cfg.monitoring
    cur, ref = current.get("day_events"), reference.get("day_events")
    if not ref:
        return [_skip("tracking_outage", "share_lost", 1 - m.outage_ratio,
                      "the reference has no day_events (statistics schema 1): retrain to get them")]
    if not cur or not cur["events"]:
        return [check("active_profiles_today", GROUP, "abs_log_ratio", NONE_LEFT,
                      math.log(m.scale_ratio_threshold), n=current["rows"],
                      reference_n=reference.get("rows"), detail={"events_today": 0})]
    out = []
    # Shares of events: events are the unit (the practical thresholds guard against their
    # clustering in sessions and profiles).
    n, n_ref = cur["events"], ref["events"]
    for t, count in sorted(ref["type_counts"].items()):
        r = count / ref["events"]
        if t == "other" or r * cur["events"] < MIN_EXPECTED:
            continue  # unknown types have their own check; too rare a type cannot be told apart
        c = cur["type_counts"].get(t, 0) / cur["events"]
        crit, p = proportion_noise(r, n_ref, c, n, m.significance)
        out.append(check(f"tracking_outage:{t}", GROUP, "share_lost", max(1 - c / r, 0.0),
                         1 - m.outage_ratio, crit / r, p, n, n_ref,
                         {"share": c, "reference_share": r,
                          "count": cur["type_counts"].get(t, 0)}))

    for field, share in cur["null_shares"].items():
        r = ref["null_shares"].get(field)
        if r is None:
            continue
        crit, p = proportion_noise(r, n_ref, share, n, m.significance)
        out.append(check(f"null_share_today:{field}", GROUP, "abs_change", abs(share - r),
                         m.null_share_threshold, crit, p, n, n_ref,
                         {"share": share, "reference_share": r}))

    scale = math.log(m.scale_ratio_threshold)
    price, ref_price = cur["price"], ref["price"]
    if price["n"] >= MIN_EXPECTED and ref_price["n"] >= MIN_EXPECTED:
        med, ref_med = price["quantiles"]["p50"], ref_price["quantiles"]["p50"]
        out.append(check("price_scale_today", GROUP, "abs_log_ratio", _log_ratio(med, ref_med),
                         scale, n=price["n"], reference_n=ref_price["n"],
                         detail={"median": med, "reference_median": ref_med}))

    active, ref_active = cur["active_share"], ref["active_share"]
    crit, p = proportion_noise(ref_active, reference["rows"], active, current["rows"],
                               m.significance)
    noise = _log_ratio(max(ref_active - crit, 1e-12), ref_active)
    out.append(check("active_profiles_today", GROUP, "abs_log_ratio",
                     _log_ratio(active, ref_active), scale, noise, p, current["rows"],
                     reference["rows"],
                     {"active_share": active, "reference_active_share": ref_active,
                      "profiles_today": cur["profiles"]}))
    out.append(check("events_per_profile_today", GROUP, "abs_log_ratio",
                     _log_ratio(cur["events_per_profile"], ref["events_per_profile"]), scale,
                     n=n, reference_n=n_ref,
                     detail={"events_per_profile": cur["events_per_profile"],
                             "reference_events_per_profile": ref["events_per_profile"],
                             "events_today": cur["events"]}))
    return out


def checks(cfg: Config, day: dt.date, current: dict[str, Any],
           reference: dict[str, Any]) -> list[dict[str, Any]]:
    """Every data-quality check of D."""
    return intake_checks(run_summary(cfg, day), cfg) + day_checks(current, reference, cfg)
