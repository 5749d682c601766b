"""Synthetic histories in the aggregation stage's schema, for scoring and monitoring tests.

Built from numpy arrays and Arrow list offsets (no per-row Python), so the benchmark can make
millions of rows with the same code. `shift=True` gives a deliberately drifted population:
shorter, older histories dominated by searches, with more missing articles.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from propensity import storage
from propensity.config import Config
from propensity.histories.schema import COUNTER_COLUMNS, HISTORY_SCHEMA

TS = pa.timestamp("ms", tz="UTC")
# The histories contract without the dedupe key, which the model never reads, and as a
# version-1 snapshot (no counters: the model reads them as unknown).
SCHEMA = pa.schema([f for f in HISTORY_SCHEMA if f.name not in ("event_key", *COUNTER_COLUMNS)])


def make_histories(
    n: int,
    as_of: dt.date,
    cfg: Config,
    seed: int = 0,
    shift: bool = False,
    id_prefix: str = "p",
    id_start: int = 0,
) -> pa.Table:
    """`n` profiles observed up to the end of `as_of`, oldest event first."""
    rng = np.random.default_rng(seed)
    max_events = cfg.histories.max_events
    mean_len = 6 if shift else 29  # geometric: median about 20 events, as in production
    lengths = np.clip(rng.geometric(1 / mean_len, n), 1, max_events).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total = int(offsets[-1])

    end_ms = int(dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp())
    end_ms *= 1000
    # Last event some days before the end of D; gaps between events exponential (hours).
    recency_days = rng.exponential(25.0 if shift else 4.0, n)
    last = end_ms - (recency_days * 86_400_000).astype(np.int64) - 1
    gaps = (rng.exponential(30.0, total) * 3_600_000).astype(np.int64)
    owner = np.repeat(np.arange(n), lengths)
    pos_from_end = (offsets[owner + 1] - 1) - np.arange(total)  # 0 for each profile's last event
    # Time before the last event = sum of the gaps after this event (reverse cumsum per profile).
    rev = np.cumsum(gaps[::-1])[::-1]
    after = rev - np.repeat(rev[offsets[1:] - 1], lengths)  # gaps strictly after each event
    ts = last[owner] - np.where(pos_from_end > 0, after, 0)

    types = np.array(cfg.events.types, dtype=object)
    p = np.ones(len(types))
    p[types == "view"] = 12
    p[types == "search"] = 3 if not shift else 30
    p[types == "order"] = 1
    p[types == "other"] = 0.5
    codes = rng.choice(len(types), total, p=p / p.sum())

    def ids(k: int, missing: float) -> pa.Array:
        values = rng.integers(-(1 << 62), 1 << 62, k // 7 + 50)[rng.integers(0, k // 7 + 50, total)]
        return pa.array(values, pa.int64(), mask=rng.random(total) < missing)

    price = rng.lognormal(3.5, 1.0, total)
    list_of = lambda values: pa.ListArray.from_arrays(pa.array(offsets), values)  # noqa: E731
    profile = pa.array([f"{id_prefix}{i:09d}" for i in range(id_start, id_start + n)])
    return pa.Table.from_arrays(
        [
            profile,
            pa.array(lengths, pa.int32()),
            pa.array(ts[offsets[:-1]], pa.int64()).cast(TS),
            pa.array(last, pa.int64()).cast(TS),
            list_of(pa.array(ts, pa.int64()).cast(TS)),
            list_of(pa.array(types[codes], pa.string())),
            list_of(ids(total, 0.5 if shift else 0.1)),
            list_of(ids(total, 0.2)),
            list_of(ids(total, 0.2)),
            list_of(pa.array(price, pa.float64(), mask=rng.random(total) < 0.3)),
        ],
        schema=SCHEMA,
    )


def write_histories(
    cfg: Config,
    as_of: dt.date,
    n: int,
    files: int = 2,
    row_group_size: int | None = None,
    seed: int = 0,
    shift: bool = False,
) -> pa.Table:
    """Write histories(as_of) as `files` Parquet files plus the marker; return the whole table."""
    table = make_histories(n, as_of, cfg, seed=seed, shift=shift)
    part = storage.partition(cfg.uri("histories"), as_of)
    bounds = np.linspace(0, n, files + 1).astype(int)
    for i in range(files):
        chunk = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        storage.write_parquet(chunk, storage.join(part, f"part-{i:05d}.parquet"), row_group_size)
    storage.mark_complete(part)
    return table


def publish_model(
    cfg: Config, version: str, seed: int = 0, reference: dict | None = None, champion: bool = True,
    metrics: dict | None = None, reference_rows: int = 400, onnx: bool = False,
):
    """Publish a randomly initialised PropensityModel through the registry (optionally as the
    champion, with `onnx` its model.onnx as training publishes it); returns the model.
    `reference` defaults to a summary of fresh histories."""
    import torch

    from propensity.model import stats
    from propensity.model.batches import encode
    from propensity.model.network import PropensityModel
    from propensity.registry import onnx_export, store

    torch.manual_seed(seed)
    model = PropensityModel.from_config(cfg).eval()
    day = dt.date.fromisoformat(version.split(".")[0])
    if reference is None:
        from propensity.scoring.engine import score_table

        table = make_histories(reference_rows, day, cfg, seed=seed + 1000)
        probs = score_table(model, table, day, cfg.scoring.batch_size)
        reference = stats.summarize(
            table, {t: probs[:, j] for j, t in enumerate(cfg.target_names)}, day, cfg
        )
    meta = {
        "model": cfg.model.model_dump(),
        "types": cfg.events.types,
        "targets": cfg.target_names,
        "feature_spec": model.spec.to_dict(),
        "training_date": day.isoformat(),
        "metrics": metrics
        or {t: {"auroc": 0.7, "average_precision": 0.3} for t in cfg.target_names},
        "gate": {"decision": "approved", "reasons": []},
    }
    artefact = None
    if onnx:
        encoded = encode(make_histories(1000, day, cfg, seed=seed + 2000), model.spec, day)
        artefact = onnx_export.build(model, onnx_export.sample_batches(encoded,
                                                                       np.arange(len(encoded))))
        assert artefact is not None, "the ONNX export failed (see the log)"
    store.publish(cfg, version, store.weights_bytes(model), meta, reference, artefact)
    if champion:
        store.move_champion(cfg, version, "promote", "tests", "scoring tests")
    return model
