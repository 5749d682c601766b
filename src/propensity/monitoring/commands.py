"""`propensity monitor`: input/score drift of predictions(D) and realised quality of D-H."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from propensity import storage
from propensity.cli_options import ConfigOption, DateOption, SetOption, load
from propensity.errors import DataQualityAlert, DriftAlert, QualityAlert
from propensity.ui import kv

log = logging.getLogger(__name__)


def monitor(
    day: DateOption,
    fail_on_drift: Annotated[
        bool,
        typer.Option("--fail-on-drift",
                     help="Exit 11 on a failed drift or data-quality check, 12 on a "
                          "realised-AUC drop."),
    ] = False,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Check data quality, input and score drift, and realised quality once labels have matured.

    Checks D's data quality (records in, quarantine, unknown types, D's own events against the
    reference), drift of predictions(D)'s statistics (_manifest.json) against the model's
    reference, and, for D-H, the predictions against labels from histories(D). Writes
    reports/dt=D/monitoring.json (every check: name, group, statistic, value, threshold, sample
    sizes, p-value, passed), report.html, then _SUCCESS. Exit codes: 0 written (alerts only
    reported unless --fail-on-drift), 3 predictions(D) or the model's reference missing,
    11 drift or DATA-QUALITY alert (named in the message), 12 quality alert (12 wins when
    several fire, then data quality), 13 another run holds the lease of monitor/dt=D.

    Example: propensity monitor --date 2026-01-20 --fail-on-drift
    """
    # Deferred: the job imports torch (the report's attribution), so `propensity --help` stays fast.
    from propensity.monitoring.job import HTML, run_monitor

    cfg = load(config, sets)
    result = run_monitor(cfg, day)
    failed = [c["name"] for c in result["checks"]
              if c["passed"] is False and c.get("alerts", True)]
    for c in result["checks"]:
        if c["passed"] is False:
            log.warning("check failed %s", kv(check=c["name"], group=c["group"],
                                              alert=c.get("alerts", True)))
    if not fail_on_drift:
        return
    if result["quality_alert"]:
        drops = {t: round(r["auc_drop"], 4) for t, r in result["quality"]["targets"].items()
                 if r["passed"] is False}
        raise QualityAlert(f"realised AUROC of {result['quality']['predictions_date']} dropped "
                           f"beyond {cfg.monitoring.auc_drop_threshold}: {drops}")
    report_uri = f"{storage.partition(cfg.uri('reports'), day)}/{HTML}"
    if result.get("data_quality_alert"):
        bad = [c["name"] for c in result["checks"]
               if c["passed"] is False and c["group"] == "data_quality"]
        also = [n for n in failed if n not in bad]
        raise DataQualityAlert(f"DATA QUALITY alert on {day}: failed checks {bad}"
                               + (f", and drift checks {also}" if also else "")
                               + f" (see {report_uri})")
    if result["drift_alert"]:
        raise DriftAlert(f"drift on {day}: failed checks {failed} (see {report_uri})")
