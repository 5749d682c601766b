"""`propensity score --engine spark`: executors score shards, the driver finalizes.

The driver broadcasts the model's safetensors bytes (verified against model.json's sha256 again
on each executor) with its metadata, and its model.onnx where `scoring.runtime` chose ONNX
Runtime (verified the same way); an RDD of the missing shards, one shard per partition,
runs a Python function that loads the model once per task and scores its shard with the same
Arrow-record-batch code as the local engine, writing the same `part-<shard>.parquet` file
through `propensity.storage`. (An RDD rather than `mapInArrow`: the latter needs pandas on every
node for nothing, since shards are read by the executors themselves.) The layout, resumption and the
version pinning are therefore identical to the local engine's; Spark only spreads the shards.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

from propensity import storage
from propensity.config import Config
from propensity.errors import BadInput
from propensity.scoring import layout
from propensity.ui import kv

log = logging.getLogger(__name__)


def _score_partition(shard_jsons, payload):
    """Task function: shard descriptors (JSON) in, shard records (JSON) out."""
    import torch
    from safetensors.torch import load as load_safetensors

    from propensity.registry import onnx_export, store
    from propensity.scoring.engine import score_shard
    from propensity.scoring.runtime import EagerScorer, OnnxScorer

    shipped = payload.value
    meta = shipped["meta"]
    if store.sha256(shipped["weights"]) != meta["weights"]["sha256"]:
        raise BadInput("model weights changed in transit to the executor (sha256 mismatch)")
    if shipped["onnx"] is not None and store.sha256(shipped["onnx"]) != meta["onnx"]["sha256"]:
        raise BadInput(f"{store.ONNX} changed in transit to the executor (sha256 mismatch)")
    cfg = Config.model_validate(json.loads(shipped["cfg"]))
    threads = cfg.scoring.threads or 1  # Spark runs one task per core
    torch.set_num_threads(threads)
    model = store.build_model(meta)
    model.load_state_dict(load_safetensors(shipped["weights"]), strict=True)
    model.eval()
    scorer = EagerScorer(model) if shipped["onnx"] is None else OnnxScorer(
        onnx_export.session(shipped["onnx"], threads), model.spec, list(model.targets)
    )
    day = dt.date.fromisoformat(shipped["day"])
    for shard_json in shard_jsons:
        shard = layout.Shard(**json.loads(shard_json))
        record = score_shard(shard, shipped["out"], scorer, meta["version"], day, cfg,
                             worker="spark", generation=shipped["generation"])
        yield json.dumps({k: record[k] for k in ("shard", "rows", "seconds")})


def score_on_spark(cfg: Config, day: dt.date, out: str, todo: list[layout.Shard], meta: dict,
                   how: str = "eager", generation: int = 0):
    """Score `todo` shards into `out` (files of `generation`) on the cluster of the config's
    Spark session with runtime `how`."""
    from dataclasses import asdict

    from propensity.registry import store
    from propensity.spark import spark_session

    if not todo:
        return
    spark = spark_session(cfg, app_name="propensity-score")
    sc = spark.sparkContext
    if sc.master.startswith("local") and "PYSPARK_PYTHON" not in os.environ:
        # Local mode starts Python workers with `python3` from PATH, which need not be the
        # interpreter that has propensity and torch installed: use this one.
        sc.pythonExec = sys.executable
    weights = storage.read_bytes(storage.join(store.version_uri(cfg, meta["version"]),
                                              store.WEIGHTS))
    onnx = store.read_onnx(cfg, meta["version"], meta) if how == "onnx" else None
    payload = sc.broadcast(
        {"weights": weights, "onnx": onnx, "meta": meta, "cfg": cfg.model_dump_json(),
         "day": day.isoformat(), "out": out, "generation": generation}
    )
    shards = sc.parallelize([json.dumps(asdict(s)) for s in todo], numSlices=len(todo))
    try:
        rows = shards.mapPartitions(lambda it: _score_partition(it, payload)).collect()
    finally:
        payload.unpersist()
    scored = [json.loads(r) for r in rows]
    log.info("spark scored %s", kv(shards=len(scored), rows=sum(r["rows"] for r in scored)))
