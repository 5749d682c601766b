"""The monitor job: input/score drift of predictions(D) and realised quality of D-H.

Reads predictions(D)'s manifest, the model version's reference statistics and, for D-H, the
matured labels; writes reports/dt=D/monitoring.json (machines), report.html (people), then
_SUCCESS. `propensity monitor` and the daily cycle call `run_monitor`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from propensity import storage
from propensity.attribution.render import summary_html
from propensity.attribution.summary import global_summary
from propensity.config import Config
from propensity.errors import ExitCode, PropensityError
from propensity.monitoring import drift, quality, report
from propensity.registry import store
from propensity.ui import kv

log = logging.getLogger(__name__)

RESULT = "monitoring.json"
HTML = "report.html"


class DriftAlert(PropensityError):
    exit_code = ExitCode.DRIFT_ALERT


class QualityAlert(PropensityError):
    exit_code = ExitCode.QUALITY_ALERT


def _trend(cfg: Config, day: dt.date, today: dict) -> list[dict]:
    """The complete reports of the `trend_days` days up to D (today's result last)."""
    reports = cfg.uri("reports")
    start = day - dt.timedelta(days=cfg.monitoring.trend_days - 1)
    past = [d for d in storage.list_partitions(reports) if start <= d < day]
    out = [storage.read_json(storage.join(storage.partition(reports, d), RESULT)) for d in past]
    return [*out, today]


def run_monitor(cfg: Config, day: dt.date) -> dict[str, Any]:
    """Compute every check for D, write monitoring.json, report.html and the marker."""
    predictions = storage.partition(cfg.uri("predictions"), day)
    storage.require_complete(predictions)
    manifest = storage.read_json(storage.join(predictions, "manifest.json"))
    version = manifest["model"]["version"]
    reference = store.read_reference(cfg, version)
    current = manifest["stats"]
    checks = drift.checks(current, reference, cfg)
    realised = quality.evaluate(cfg, day)
    m = cfg.monitoring
    result = {
        "date": day.isoformat(),
        "model_version": version,
        "rows": manifest["rows"],
        "reference_as_of": reference.get("as_of"),
        "thresholds": {"psi": m.psi_threshold, "js": m.js_threshold, "ks": m.ks_threshold,
                       "null_share": m.null_share_threshold, "auc_drop": m.auc_drop_threshold},
        "checks": checks,
        "quality": realised,
        "drift_alert": any(c["passed"] is False for c in checks),
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
    storage.delete(storage.join(out, storage.MARKER))  # a rerun: incomplete until rewritten
    page = report.render(result, current, reference, _trend(cfg, day, result), attribution_html)
    storage.write_json(storage.join(out, RESULT), result)
    storage.write_bytes(storage.join(out, HTML), page.encode())
    storage.mark_complete(out)
    failed = [c["name"] for c in checks if c["passed"] is False]
    log.info("monitoring written %s", kv(partition=out, checks=len(checks), failed=len(failed),
                                          quality=realised["status"]))
    return result
