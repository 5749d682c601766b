"""Explanations of single profiles: the running prediction along the history and each event's
contribution (integrated gradients, optionally leave-one-out), as plain JSON-ready dicts."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pyarrow as pa

from propensity.attribution.integrated_gradients import (
    BASELINE,
    IG_STEPS,
    IG_TOLERANCE,
    integrated_gradients,
    leave_one_out,
    resolve_target,
    running_probabilities,
)
from propensity.attribution.summary import HISTORY_COLUMNS
from propensity.errors import MissingInput
from propensity.explain import lookup
from propensity.model.batches import encode, prediction_time_ms
from propensity.registry import load_model
from propensity.ui import kv

log = logging.getLogger(__name__)
ID_PREFIX = 12  # characters of a pseudonymised id shown in terminal tables
LOO = "f(history) - f(history without the event), re-encoded (gaps and recency recomputed)"


def short(stored_id: str) -> str:
    """A short prefix of a pseudonymised id, for terminal tables."""
    return stored_id[:ID_PREFIX] + "…"


def _ts_ms(values: list) -> list[int]:
    return [int(v.timestamp() * 1000) for v in values]


def _iso(ms: int) -> str:
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def _r(x: float) -> float:
    return round(float(x), 6)


def explain_rows(
    model,
    meta: dict,
    histories: pa.Table,
    day: dt.date,
    target: str | None = None,
    steps: int = IG_STEPS,
    with_leave_one_out: bool = True,
    tolerance: float = IG_TOLERANCE,
) -> list[dict]:
    """One explanation dict per row of a histories table (see docs/explain.md for the fields)."""
    name, t = resolve_target(model, target)
    encoded = encode(histories, model.spec, day, source=f"histories of {day}")
    end = prediction_time_ms(day)
    groups = model.feature_groups
    out = []
    for i, row in enumerate(histories.select(HISTORY_COLUMNS).to_pylist()):
        batch = encoded.batch(np.array([i]))
        n = int(encoded.lengths[i])
        ig = integrated_gradients(model, batch, t, steps=steps, tolerance=tolerance)
        running = running_probabilities(model, batch, t)[0]
        loo = None
        if with_leave_one_out and n:
            _, loo = leave_one_out(model, histories.slice(i, 1), model.spec, day, t)
        contributions = ig.contributions[0]
        ts = _ts_ms(row["ts"])
        events = []
        for k in range(n):
            events.append(
                {
                    "index": k,
                    "ts": _iso(ts[k]),
                    "hours_before_prediction": round((end - ts[k]) / 3_600_000, 3),
                    "event_type": row["event_type"][k],
                    "article": row["article"][k],
                    "brand": row["brand"][k],
                    "category": row["category"][k],
                    "price": row["price"][k],
                    "running_probability": _r(running[k]),
                    "contribution": _r(contributions[k]),
                    "leave_one_out": None if loo is None else _r(loo[k]),
                    "contribution_by_feature": {
                        g: _r(ig.features[0, k, s].sum()) for g, s in groups.items()
                    },
                }
            )
        expected = float(ig.prediction[0] - ig.baseline[0])
        gap = float(ig.gap[0])
        if gap > tolerance:
            log.warning("integrated gradients not converged %s",
                        kv(profile=short(row["profile_id"]), gap=f"{gap:.4f}", steps=ig.steps))
        out.append(
            {
                "profile_id": row["profile_id"],
                "date": day.isoformat(),
                "model_version": meta["version"],
                "target": name,
                "prediction": _r(ig.prediction[0]),
                "n_events": n,
                "integrated_gradients": {
                    "output": f"probability of {name}",
                    "baseline": BASELINE,
                    "baseline_prediction": _r(ig.baseline[0]),
                    "steps": ig.steps,
                    "sum_of_contributions": _r(contributions[:n].sum()),
                    "expected_sum": _r(expected),
                    "completeness_gap": _r(gap),
                    "tolerance": tolerance,
                    "within_tolerance": gap <= tolerance,
                },
                "leave_one_out": LOO if loo is not None else None,
                "events": events,
            }
        )
    return out


def explain_ids(
    cfg,
    day: dt.date,
    stored_ids: list[str],
    target: str | None = None,
    version: str | None = None,
    steps: int = IG_STEPS,
    with_leave_one_out: bool = True,
) -> list[dict]:
    """Explanations of profiles of histories(D) given by pseudonymised id, in the order given.
    MissingInput (exit 3) when one is not in histories(D), naming only a prefix of its
    pseudonymised id."""
    model, meta = load_model(cfg, version)
    resolve_target(model, target)  # fail on a bad --target before reading anything
    table = lookup.find_histories(cfg, day, stored_ids)
    found = set(table.column("profile_id").to_pylist())
    missing = [pid for pid in stored_ids if pid not in found]
    if missing:
        raise MissingInput(
            f"profile {short(missing[0])} (pseudonymised) is not in the histories of {day} "
            f"({len(missing)} of {len(stored_ids)} not found); check the id, the date and the "
            "pseudonymisation key (an id from explain --top or a predictions file is already "
            "pseudonymised: pass it, or a unique prefix, with --pseudonymised)"
        )
    log.info("explaining %s", kv(profiles=len(stored_ids), date=day, model=meta["version"]))
    return explain_rows(model, meta, table, day, target, steps, with_leave_one_out)
