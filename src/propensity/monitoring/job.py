"""The monitor job: data quality and drift of predictions(D), realised quality of D-H.

Reads predictions(D)'s manifest, the model version's reference statistics, the aggregation's run
summary of D and, for D-H, the matured labels; writes reports/dt=D/monitoring.json (machines),
report.html (people), then _SUCCESS, holding the lease `monitor/dt=D` (a second run of the day
refuses, exit 13). `propensity monitor` and the daily cycle call `run_monitor`.

The reference is the validation rows of every snapshot pair of the version's training, one
summary per day (`by_day`). Drift is checked against the reference's days of D's weekday (the
model sees the weekday, so a mix of weekdays is not what a day should look like), or against the
whole reference where it has no such day; data quality against the whole reference. A failed
check raises its alert unless it is a histories input check and `alert_on_input_drift` is off
(then it is reported as drifted, `alerts: false`, for diagnosis).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from propensity import lease, storage
from propensity.attribution.render import summary_html
from propensity.attribution.summary import global_summary
from propensity.config import Config
from propensity.model import stats
from propensity.monitoring import data_quality, drift, quality, report
from propensity.predictions import read_manifest
from propensity.registry import store
from propensity.ui import kv

log = logging.getLogger(__name__)

RESULT = "monitoring.json"
HTML = "report.html"


def comparison_reference(reference: dict, day: dt.date) -> tuple[dict, dict[str, Any]]:
    """The part of the reference that D's drift is checked against, and what it is: the
    reference's days of D's weekday where it has them, else the whole reference."""
    by_day = reference.get("by_day") or {}
    same = [s for d, s in by_day.items() if dt.date.fromisoformat(d).weekday() == day.weekday()]
    covers = reference.get("covers") or sorted(by_day) or [reference.get("as_of")]
    about = {
        "schema_version": reference.get("schema_version"),
        "covers": covers,
        "rows": reference.get("rows", 0),
        "rows_by_day": {d: s["rows"] for d, s in by_day.items()},
        # The model reads the weekday of its prediction time: does the reference hold D's?
        "covers_weekday": any(dt.date.fromisoformat(str(d)).weekday() == day.weekday()
                              for d in covers if d),
    }
    if same:
        part = stats.merge(same) if len(same) > 1 else same[0]
        return part, {**about, "drift_against": sorted(s["as_of"] for s in same),
                      "drift_rows": part["rows"], "drift_basis": "same weekday"}
    basis = "whole reference" + (" (no day of this weekday)" if by_day else "")
    return reference, {**about, "drift_against": covers, "drift_rows": reference.get("rows", 0),
                       "drift_basis": basis}


def _trend(cfg: Config, day: dt.date, today: dict) -> list[dict]:
    """The complete reports of the `trend_days` days up to D (today's result last)."""
    reports = cfg.uri("reports")
    start = day - dt.timedelta(days=cfg.monitoring.trend_days - 1)
    past = [d for d in storage.list_partitions(reports) if start <= d < day]
    out = [storage.read_json(storage.join(storage.partition(reports, d), RESULT)) for d in past]
    return [*out, today]


def run_monitor(cfg: Config, day: dt.date) -> dict[str, Any]:
    """Compute every check for D, write monitoring.json, report.html and the marker, under the
    lease `monitor/dt=D`."""
    with lease.acquire(cfg, "monitor", lease.day_key(day)) as held:
        return _run_monitor(cfg, day, held)


def _run_monitor(cfg: Config, day: dt.date, held: lease.Lease) -> dict[str, Any]:
    predictions = storage.partition(cfg.uri("predictions"), day)
    storage.require_complete(predictions)
    manifest = read_manifest(predictions)
    version = manifest["model"]["version"]
    reference = store.read_reference(cfg, version)
    current = manifest["stats"]
    against, about = comparison_reference(reference, day)
    m = cfg.monitoring
    checks = (data_quality.checks(cfg, day, current, reference)
              + drift.checks(current, against, cfg)
              + drift.day_type_checks(current, reference, cfg))
    realised = quality.evaluate(cfg, day)
    for c in checks:
        c["alerts"] = c["group"] != "inputs" or m.alert_on_input_drift
        if c["group"] == "scores" and not about["covers_weekday"]:
            # The model reads the weekday of its prediction time, so scores of a weekday the
            # reference lacks differ by design: reported, never an alert (retraining with more
            # snapshot pairs covers every weekday).
            c["alerts"] = False
            c.setdefault("detail", {})["not_alerting"] = "the reference has no day of this weekday"
    failed = [c for c in checks if c["passed"] is False and c["alerts"]]
    result = {
        "date": day.isoformat(),
        "model_version": version,
        "rows": manifest["rows"],
        "reference_as_of": reference.get("as_of"),
        "reference": about,
        "thresholds": {"psi": m.psi_threshold, "js": m.js_threshold, "ks": m.ks_threshold,
                       "null_share": m.null_share_threshold, "auc_drop": m.auc_drop_threshold,
                       "significance": m.significance},
        "checks": checks,
        "quality": realised,
        "data_quality_alert": any(c["group"] == data_quality.GROUP for c in failed),
        "drift_alert": any(c["group"] != data_quality.GROUP for c in failed),
        "quality_alert": any(
            r["passed"] is False for r in realised.get("targets", {}).values()
        ),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    attribution_html = None
    if m.attribution_profiles:
        attribution = global_summary(cfg, day, m.attribution_profiles, version=version)
        result["attribution"] = attribution
        attribution_html = summary_html(attribution)
    out = storage.partition(cfg.uri("reports"), day)
    held.check()  # a run whose lease was taken over writes nothing
    storage.delete(storage.join(out, storage.MARKER))  # a rerun: incomplete until rewritten
    page = report.render(result, current, against, _trend(cfg, day, result), attribution_html)
    storage.write_json(storage.join(out, RESULT), result)
    storage.write_bytes(storage.join(out, HTML), page.encode())
    storage.mark_complete(out)
    log.info("monitoring written %s", kv(partition=out, checks=len(checks), failed=len(failed),
                                          quality=realised["status"]))
    return result
