"""The daily cycle's view of the stages: their Python entry points and the state they leave.

Each stage is called in-process (one Spark session and one torch import for a whole backfill)
and read back only through its storage contract (partitions, manifests, registry metadata).
Stage jobs are imported inside the functions: they import Spark or torch, and `propensity --help`
(which imports this module) stays fast.
"""

from __future__ import annotations

import datetime as dt

from propensity import storage
from propensity.config import Config
from propensity.errors import ExitCode
from propensity.predictions import manifest_uri
from propensity.registry import store


def champion(cfg: Config) -> str | None:
    return store.champion_version(cfg)


def versions_trained_for(cfg: Config, day: dt.date) -> list[tuple[str, str]]:
    """(version, gate decision) of the complete model versions trained for `day`, oldest first."""
    out = []
    for version in store.version_names(cfg):
        if version.startswith(day.isoformat() + "."):
            meta = store.read_metadata(cfg, version)
            if str(meta.get("training_date")) == day.isoformat():
                out.append((version, (meta.get("gate") or {}).get("decision", "not gated")))
    return out


def prediction_model(cfg: Config, day: dt.date) -> str | None:
    """The model version recorded in a complete predictions partition's manifest
    (`_manifest.json`; `manifest.json` in partitions scored before side files took a `_`)."""
    uri = manifest_uri(storage.partition(cfg.uri("predictions"), day))
    return storage.read_json(uri)["model"]["version"] if uri else None


def aggregate(cfg: Config, day: dt.date, mode: str) -> str:
    """histories(D): `incremental` from histories(D-1) and events(D), or `full` from the raw
    partitions of D's window."""
    from propensity.histories import job
    from propensity.spark import spark_session

    summary = job.run(spark_session(cfg), cfg, day, mode=mode)
    window = len(summary["input_partitions"])
    return (
        f"{summary['events_valid']} events, {summary['quarantined_total']} quarantined, "
        f"{summary['snapshot_profiles']} profiles"
        + (f" ({window} event partitions)" if mode == "full" else "")
    )


def champion_as_of(cfg: Config, day: dt.date) -> store.AsOf:
    """The champion that scores `day` (none before the first model trained on or before it)."""
    return store.champion_as_of(cfg, day)


def score(cfg: Config, day: dt.date, rescore: bool) -> tuple[str, str, bool]:
    """predictions(D) with the champion as of D, as `propensity score` decides (`rescore`:
    replace complete ones); (model version of the day's predictions, detail, whether it scored)."""
    from propensity.scoring import run

    outcome = run.score_day(cfg, day, rescore=rescore)
    manifest = outcome.manifest
    if outcome.action != "score":
        return manifest["model"]["version"], outcome.message, False
    detail = f"{manifest['rows']} profiles scored; {outcome.message}"
    return manifest["model"]["version"], detail, True


def train(cfg: Config, day: dt.date) -> tuple[str, str, str]:
    """A candidate trained for D (warm from the champion when there is one) through the gate;
    (version, gate decision, detail). A rejected candidate is stored, the champion unchanged."""
    from propensity.training import run
    from propensity.training.gate import GateRejected

    try:
        meta = run.train(cfg, day)
    except GateRejected as e:
        version, decision = versions_trained_for(cfg, day)[-1]
        return version, decision, str(e)
    start = f"warm from {meta['parent_version']}" if meta["warm_start"] else "cold"
    auc = " ".join(f"{t}={m['auroc']:.3f}" for t, m in meta["metrics"].items())
    return meta["version"], meta["gate"]["decision"], f"{start}, val AUROC {auc}"


def _report(cfg: Config, day: dt.date) -> dict | None:
    from propensity.monitoring.job import RESULT

    part = storage.partition(cfg.uri("reports"), day)
    return storage.read_json(storage.join(part, RESULT)) if storage.is_complete(part) else None


def _outcome(result: dict) -> tuple[int, str]:
    """The exit code (12 quality, 11 data quality or drift, else 0) and a one-line account of a
    report; a data-quality alert is named as such (broken input, not a drifting population)."""
    failed = [c["name"] for c in result["checks"]
              if c["passed"] is False and c.get("alerts", True)]
    drifted = [c["name"] for c in result["checks"]
               if c["passed"] is False and not c.get("alerts", True)]
    quality = result["quality"]
    if quality.get("status") == "ok":
        realised = " ".join(
            f"{t} realised AUROC {r['auroc']:.3f}" if r["auroc"] is not None else f"{t} n/a"
            for t, r in quality["targets"].items()
        )
        realised = f"{quality['predictions_date']}: {realised}"
    else:
        realised = f"quality {quality.get('status')}: {quality.get('reason', '')}"
    detail = f"{len(result['checks'])} checks, {len(failed)} failed" + (
        f" ({', '.join(failed[:4])}{'...' if len(failed) > 4 else ''})" if failed else ""
    ) + (f", {len(drifted)} inputs drifted without alert" if drifted else "")
    if result["quality_alert"]:
        return int(ExitCode.QUALITY_ALERT), f"QUALITY ALERT; {detail}; {realised}"
    if result.get("data_quality_alert"):
        return int(ExitCode.DRIFT_ALERT), f"DATA QUALITY ALERT; {detail}; {realised}"
    if result["drift_alert"]:
        return int(ExitCode.DRIFT_ALERT), f"DRIFT ALERT; {detail}; {realised}"
    return int(ExitCode.OK), f"{detail}; {realised}"


def monitor(cfg: Config, day: dt.date) -> tuple[int, str]:
    """reports(D): drift of predictions(D) and the realised quality of predictions(D-H)."""
    from propensity.monitoring.job import run_monitor

    return _outcome(run_monitor(cfg, day))


def report_outcome(cfg: Config, day: dt.date) -> tuple[int, str]:
    """The outcome of an existing complete report of D."""
    return _outcome(_report(cfg, day))


def retrain_requested(cfg: Config, day: dt.date) -> bool:
    """Whether the monitoring report of `day` raised a drift or quality alert, and no
    data-quality alert: a model retrained on broken input would learn the fault."""
    result = _report(cfg, day)
    return bool(result and (result["drift_alert"] or result["quality_alert"])
                and not result.get("data_quality_alert"))


def report_html(cfg: Config, day: dt.date) -> str:
    from propensity.monitoring.job import HTML

    return storage.join(storage.partition(cfg.uri("reports"), day), HTML)
