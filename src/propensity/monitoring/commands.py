"""`propensity monitor`: input/score drift of predictions(D) and realised quality of D-H."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated, Any

import typer

from propensity import storage
from propensity.cli_options import ConfigOption, DateOption, SetOption, load
from propensity.config import Config
from propensity.errors import ExitCode, PropensityError, UsageError
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
    from propensity.monitoring import drift, quality, report
    from propensity.registry import store

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
        from propensity.explain.render import summary_html
        from propensity.explain.summary import global_summary

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


def monitor(
    date: DateOption,
    fail_on_drift: Annotated[
        bool,
        typer.Option("--fail-on-drift",
                     help="Exit 11 on a failed drift check, 12 on a realised-AUC drop."),
    ] = False,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Check input and score drift, and realised quality once labels have matured.

    Compares predictions(D)'s statistics (manifest.json) with the model's reference and, for D-H,
    the predictions against labels from histories(D). Writes reports/dt=D/monitoring.json (every
    check: name, statistic, value, threshold, passed), report.html, then _SUCCESS. Exit codes:
    0 written (alerts only reported unless --fail-on-drift), 3 predictions(D) or the model's
    reference missing, 11 drift alert, 12 quality alert (12 wins when both fire).
    """
    cfg = load(config, sets)
    try:
        day = storage.as_date(date)
    except ValueError as e:
        raise UsageError(f"--date: {e}") from None
    result = run_monitor(cfg, day)
    failed = [c["name"] for c in result["checks"] if c["passed"] is False]
    for name in failed:
        log.warning("drift check failed %s", kv(check=name))
    if not fail_on_drift:
        return
    if result["quality_alert"]:
        drops = {t: round(r["auc_drop"], 4) for t, r in result["quality"]["targets"].items()
                 if r["passed"] is False}
        raise QualityAlert(f"realised AUROC of {result['quality']['predictions_date']} dropped "
                           f"beyond {cfg.monitoring.auc_drop_threshold}: {drops}")
    if result["drift_alert"]:
        raise DriftAlert(f"drift on {day}: failed checks {failed} "
                         f"(see {storage.partition(cfg.uri('reports'), day)}/{HTML})")
