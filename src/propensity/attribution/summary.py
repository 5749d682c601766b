"""Global attribution summary: which event types and recencies drive the predictions of a day.

For a seeded sample of histories(D), integrated gradients (see `attribution`) for every event,
then per group (event type; time before the prediction) the mean |contribution| (how much such
events move predictions) and the mean signed contribution (in which direction), and each
group's share of the total |contribution|; the same per counter feature (profile-level inputs,
`counter_attributions`, against the counters at zero), per profile. `propensity explain --summary` and the monitoring
report show it through `global_summary(cfg, date, n_profiles)` and `render.summary_html`.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from propensity import storage
from propensity.attribution.integrated_gradients import (
    BASELINE,
    counter_attributions,
    integrated_gradients,
    resolve_target,
)
from propensity.config import Config
from propensity.errors import BadInput, MissingInput
from propensity.model.batches import (
    ENCODED_LIST_COLUMNS,
    encode,
    length_buckets,
    prediction_time_ms,
)
from propensity.registry import load_model
from propensity.ui import kv, progress

log = logging.getLogger(__name__)
SUMMARY_STEPS = 32  # first grid's trapezoid intervals (refined where the gap is larger)
SUMMARY_MAX_STEPS = 64  # bounds memory: the gradients of every grid point of a batch are kept
SUMMARY_TOLERANCE = 0.01  # completeness tolerance of the summary (it averages many events)
BATCH = 32  # profiles per integrated-gradients batch
# Recency buckets: upper edges in hours before the prediction time (end of D), and their names.
RECENCY_EDGES = [24, 72, 168, 720]
RECENCY_NAMES = ["< 1 day", "1-3 days", "3-7 days", "7-30 days", "> 30 days"]
HISTORY_COLUMNS = ["profile_id", *ENCODED_LIST_COLUMNS]  # what an explanation reads


def history_columns(pf: pq.ParquetFile, uri: str) -> list[str]:
    """The columns an explanation reads; BadInput naming the file when one is missing."""
    names = pf.schema_arrow.names
    missing = [c for c in HISTORY_COLUMNS if c not in names]
    if missing:
        raise BadInput(f"{uri}: histories columns missing: {', '.join(missing)}")
    return HISTORY_COLUMNS


def sample_histories(cfg: Config, day: dt.date, n: int, seed: int = 0) -> pa.Table:
    """About `n` profiles of histories(D): whole row groups in a seeded random order until `n`
    rows are read, then `n` of those rows at random. Files are sorted by pseudonymised id (a
    keyed hash), so any row group is already a random sample of profiles."""
    files = storage.parquet_files(storage.partition(cfg.uri("histories"), day))
    groups = []
    opened = {}
    for uri in files:
        pf = storage.open_parquet(uri)
        opened[uri] = pf
        groups.extend((uri, g) for g in range(pf.num_row_groups))
    rng = np.random.default_rng(seed)
    parts, rows = [], 0
    for k in rng.permutation(len(groups)):
        if rows >= n:
            break
        uri, g = groups[k]
        pf = opened[uri]
        part = pf.read_row_group(g, columns=history_columns(pf, uri))
        parts.append(part)
        rows += part.num_rows
    if not rows:
        raise MissingInput(f"histories of {day} hold no profile to summarise")
    table = pa.concat_tables(parts, promote_options="permissive")
    if table.num_rows > n:
        table = table.take(np.sort(rng.choice(table.num_rows, n, replace=False)))
    return table


def _groups(names: np.ndarray, values: np.ndarray, order: list[str]) -> dict[str, dict]:
    total_abs = float(np.abs(values).sum()) or 1.0
    out = {}
    for name in order:
        v = values[names == name]
        out[name] = {
            "events": int(len(v)),
            "mean_abs": round(float(np.abs(v).mean()), 6) if len(v) else 0.0,
            "mean": round(float(v.mean()), 6) if len(v) else 0.0,
            "share_of_abs": round(float(np.abs(v).sum()) / total_abs, 6),
        }
    return out


def recency_bucket(hours: np.ndarray) -> np.ndarray:
    """The recency bucket name of each event, from its hours before the prediction time."""
    return np.array(RECENCY_NAMES, dtype=object)[np.searchsorted(RECENCY_EDGES, hours, "right")]


def summarise(model, meta: dict, table: pa.Table, day: dt.date, target: str | None = None,
              steps: int = SUMMARY_STEPS) -> dict:
    """The global summary of the profiles of a histories table (see module docstring)."""
    name, t = resolve_target(model, target)
    encoded = encode(table, model.spec, day, source=f"histories of {day}")
    contributions = np.zeros(int(encoded.offsets[-1]), dtype=np.float64)
    predictions, baselines, gaps = [], [], []
    counter_parts, counter_gaps, counter_names = [], [], []
    batches = length_buckets(encoded.lengths, BATCH)
    with progress() as bar:
        task = bar.add_task("explaining", total=len(encoded))
        for rows in batches:
            batch = encoded.batch(rows)
            ig = integrated_gradients(model, batch, t, steps=steps, tolerance=SUMMARY_TOLERANCE,
                                      max_steps=SUMMARY_MAX_STEPS)
            per_event = ig.contributions
            for j, row in enumerate(rows):
                n = int(encoded.lengths[row])
                start = int(encoded.offsets[row])
                contributions[start : start + n] = per_event[j, :n]
            predictions.append(ig.prediction)
            baselines.append(ig.baseline)
            gaps.append(ig.gap)
            counters = counter_attributions(model, batch, t)
            counter_names = counters.names
            counter_parts.append(counters.features)
            counter_gaps.append(counters.gap)
            bar.advance(task, len(rows))
    types = np.array(model.spec.types, dtype=object)[encoded.event_type]
    ts = table.column("ts").combine_chunks().flatten().cast(pa.int64()).to_numpy()
    hours = (prediction_time_ms(day) - ts) / 3_600_000
    gap = np.concatenate(gaps) if gaps else np.zeros(0)
    return {
        "date": day.isoformat(),
        "model_version": meta["version"],
        "target": name,
        "method": "integrated_gradients",
        "output": f"probability of {name}",
        "baseline": BASELINE,
        "profiles": len(encoded),
        "events": int(len(contributions)),
        "mean_prediction": round(float(np.concatenate(predictions).mean()), 6) if gaps else 0.0,
        "mean_baseline": round(float(np.concatenate(baselines).mean()), 6) if gaps else 0.0,
        "max_completeness_gap": round(float(gap.max(initial=0.0)), 6),
        "profiles_not_complete": int((gap > SUMMARY_TOLERANCE).sum()),
        "by_event_type": _groups(types, contributions, list(model.spec.types)),
        "by_recency": _groups(recency_bucket(hours), contributions, RECENCY_NAMES),
        "by_counter": _counter_groups(counter_names, counter_parts),
        "max_counter_gap": round(float(np.concatenate(counter_gaps).max(initial=0.0)), 6)
        if counter_gaps
        else 0.0,
    }


def _counter_groups(names: list[str], parts: list[np.ndarray]) -> dict[str, dict]:
    """Per counter feature, over profiles: mean |attribution|, mean, share of the total."""
    if not names or not parts:
        return {}
    values = np.concatenate(parts)  # [profiles, features]
    total_abs = float(np.abs(values).sum()) or 1.0
    return {
        name: {
            "profiles": int(values.shape[0]),
            "mean_abs": round(float(np.abs(values[:, i]).mean()), 6),
            "mean": round(float(values[:, i].mean()), 6),
            "share_of_abs": round(float(np.abs(values[:, i]).sum()) / total_abs, 6),
        }
        for i, name in enumerate(names)
    }


def global_summary(cfg: Config, date: dt.date | str, n_profiles: int = 200, target: str | None = None,
                   version: str | None = None, seed: int = 0) -> dict:
    """Global attribution summary of a seeded sample of `n_profiles` of histories(date), for
    the champion (or `version`). JSON-ready dict; render with `render.summary_html`.
    Raises IncompletePartition/MissingInput (exit 3) when histories(date) or the model is
    missing."""
    day = storage.as_date(date)
    model, meta = load_model(cfg, version)
    table = sample_histories(cfg, day, n_profiles, seed=seed)
    log.info("global attribution summary %s",
             kv(date=day, profiles=table.num_rows, model=meta["version"]))
    return summarise(model, meta, table, day, target)
