"""Score shards of histories with a model: stream row groups, bucket by length, write whole.

Memory stays bounded: a shard is read in record batches of `scoring.read_rows` rows by a reader
thread, which also encodes them and builds the padded model batches (numpy and Arrow release
the GIL), at most one read batch ahead of the forward pass in the calling thread; only the
shard's output (profile ids and scores) is kept until its file is written in one piece.

Scores are `sigmoid(model(batch))` of the trainer's own `PropensityModel` on the trainer's own
batches (`model.batches.encode` + `length_buckets`), so they equal the training-time forward
pass, run eagerly or as the version's ONNX graph (`scoring.runtime`, the `Scorer`s of
`runtime`; equal to eager within the tolerance checked at export); rows are sorted by history
length inside each read batch so that padding costs little."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from propensity import storage
from propensity.model import stats
from propensity.model.batches import (
    COUNTER_INPUT_COLUMNS,
    ENCODED_LIST_COLUMNS,
    Batch,
    EncodedHistories,
    encode,
    length_buckets,
)
from propensity.scoring.layout import SHARD_META_KEY, Shard, shard_file
from propensity.scoring.runtime import EagerScorer, Scorer
from propensity.ui import kv

log = logging.getLogger(__name__)

INPUT_COLUMNS = [
    "profile_id", "first_ts", "last_ts", *ENCODED_LIST_COLUMNS, *COUNTER_INPUT_COLUMNS
]
_DONE = object()


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate `items` produced by a background thread, at most `depth` ahead (errors re-raised)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
            q.put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            q.put(e)

    thread = threading.Thread(target=produce, name="score-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def model_batches(encoded: EncodedHistories, batch_size: int) -> list[Batch]:
    """The trainer's batches of `encoded`: rows grouped by history length, padded per batch."""
    return [encoded.batch(rows) for rows in length_buckets(encoded.lengths, batch_size)]


def score_batches(scorer: Scorer, batches: list[Batch], rows: int) -> np.ndarray:
    """Probabilities [rows, n_targets] (float32), put back in row order through `batch.rows`."""
    out = np.empty((rows, len(scorer.targets)), dtype=np.float32)
    for batch in batches:
        out[batch.rows.numpy()] = scorer.probabilities(batch)
    return out


def score_encoded(model: torch.nn.Module, encoded: EncodedHistories, batch_size: int) -> np.ndarray:
    """Probabilities [N, n_targets] (float32) of the eager model in the row order of `encoded`."""
    return score_batches(EagerScorer(model), model_batches(encoded, batch_size), len(encoded))


def score_table(
    model: torch.nn.Module, table: pa.Table | pa.RecordBatch, as_of: dt.date, batch_size: int
) -> np.ndarray:
    """Probabilities [N, n_targets] of the eager model for a histories table, in its row order."""
    return score_encoded(model, encode(table, model.spec, as_of), batch_size)


def _constant(value: str, rows: int) -> pa.Array:
    """A string column holding one value (built without a Python object per row)."""
    indices = pa.array(np.zeros(rows, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array([value])).cast(pa.string())


def output_schema(targets: list[str]) -> pa.Schema:
    """The public predictions schema (shared/DESIGN.md): profile_id, one float per target,
    model_version."""
    return pa.schema(
        [("profile_id", pa.string()), *[(t, pa.float32()) for t in targets],
         ("model_version", pa.string())]
    )


def score_shard(
    shard: Shard,
    out: str,
    scorer: Scorer,
    model_version: str,
    as_of: dt.date,
    cfg,
    worker: str = "0",
    on_rows: Callable[[int], None] | None = None,
    generation: int = 0,
) -> dict[str, Any]:
    """Score one shard with `scorer` and write its output file whole (named for the
    partition's `generation`, `layout.shard_file`); return its record (rows, runtime, timing,
    stats).

    Raises BadInput (from encoding) naming the input file when a history is malformed.
    """
    started = time.perf_counter()
    targets = list(scorer.targets)
    source = shard.input_uri
    with storage.open_parquet(source) as pf:
        ids, scores, summaries = _score_row_groups(pf, shard, scorer, as_of, cfg, on_rows)
        empty_input = pf.schema_arrow.empty_table()
    rows = sum(len(a) for a in ids)
    if rows != shard.rows:
        raise RuntimeError(f"{source}: read {rows} rows of shard {shard.id}, expected {shard.rows}")
    all_scores = np.concatenate(scores) if scores else np.zeros((0, len(targets)), np.float32)
    record = {
        "shard": shard.id,
        "input_file": shard.input_uri.rsplit("/", 1)[-1],
        "row_groups": shard.row_groups,
        "rows": rows,
        "model_version": model_version,
        "runtime": scorer.runtime,
        "worker": worker,
        "seconds": round(time.perf_counter() - started, 3),
        "stats": stats.merge(summaries) if summaries else stats.summarize(
            empty_input, {t: np.zeros(0) for t in targets}, as_of, cfg
        ),
    }
    schema = output_schema(targets).with_metadata({SHARD_META_KEY: json.dumps(record).encode()})
    table = pa.Table.from_arrays(
        [
            pa.chunked_array(ids, pa.string()),
            *[pa.array(all_scores[:, j]) for j in range(len(targets))],
            _constant(model_version, rows),
        ],
        schema=schema,
    )
    storage.write_parquet(table, storage.join(out, shard_file(shard.id, generation)))
    log.info(
        "scored shard %s",
        kv(shard=shard.id, rows=rows, seconds=record["seconds"], runtime=scorer.runtime,
           per_second=round(rows / max(record["seconds"], 1e-9))),
    )
    return record


def _score_row_groups(pf, shard: Shard, scorer: Scorer, as_of: dt.date, cfg,
                      on_rows: Callable[[int], None] | None):
    """The shard's profile ids, scores and statistics per read batch. What is kept grows with
    the shard only (ids and scores: about 30 MB per million rows; one statistics summary per read
    batch); each read batch and its encoding are dropped once scored."""
    targets = list(scorer.targets)
    source = shard.input_uri
    columns = [c for c in INPUT_COLUMNS if c in pf.schema_arrow.names]

    def read_and_batch():
        # In the reader thread: Parquet decoding, encoding and padding, so that the main thread
        # does little but the forward pass.
        # One row group at a time: the reader buffers and decodes only that one, whatever the
        # shard's size.
        for group in shard.row_groups:
            for rb in pf.iter_batches(
                batch_size=cfg.scoring.read_rows, row_groups=[group], columns=columns
            ):
                encoded = encode(rb, scorer.spec, as_of, source=source)
                yield rb, model_batches(encoded, cfg.scoring.batch_size)

    ids, scores, summaries = [], [], []
    # closing: the reader thread stops before the caller closes the file, also on an error.
    with contextlib.closing(prefetch(read_and_batch(), depth=1)) as read:
        for rb, batches in read:
            probs = score_batches(scorer, batches, rb.num_rows)
            ids.append(rb.column("profile_id"))
            scores.append(probs)
            summaries.append(
                stats.summarize(
                    pa.Table.from_batches([rb]), {t: probs[:, j] for j, t in enumerate(targets)},
                    as_of, cfg,
                )
            )
            if on_rows:
                on_rows(rb.num_rows)
    return ids, scores, summaries
