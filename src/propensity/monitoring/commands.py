"""`propensity monitor`: input/score drift of predictions(D) and realised quality of D-H."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from propensity import storage
from propensity.cli_options import ConfigOption, DateOption, SetOption, load
from propensity.ui import kv

log = logging.getLogger(__name__)


def monitor(
    day: DateOption,
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
    # Deferred: the job imports torch (the report's attribution), so `propensity --help` stays fast.
    from propensity.monitoring.job import HTML, DriftAlert, QualityAlert, run_monitor

    cfg = load(config, sets)
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
