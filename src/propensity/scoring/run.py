"""One `propensity score` run: plan shards, reconcile with partial output, score, finalize.

Run modes (all write the same layout, see `scoring.layout`):
- local, one process (`--workers 1`) or N spawned worker processes (`--workers N`), each taking
  every N-th missing shard; the parent finalizes;
- array job (`--worker-index i --num-workers n`): this process scores shards i, i+n, ...; the
  worker that finds every shard done after its own finalizes (or run `--finalize` separately);
- Spark (`--engine spark`): the driver broadcasts the model's weights, executors score shards.

`scoring.runtime` picks ONNX Runtime or eager PyTorch for the pinned version (`runtime`); with
`scoring.workers: 0` the number of processes and model threads follow from the machine's cores
and that runtime (`runtime.AUTO_PLAN`).

Every mode pins the model version chosen at the start: workers load that version, not "the
champion", so a promotion during a run cannot mix two models in one partition. A run holds the
lease `score/dt=D` (an array worker `score/dt=D/worker-<i>-of-<n>`: the workers of one array
run side by side, a double-fired worker refuses), exit 13 when another run holds it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import os
import time
from typing import Any

from propensity import lease, storage
from propensity.config import Config
from propensity.errors import PropensityError, UsageError
from propensity.predictions import read_manifest
from propensity.registry import load_model
from propensity.scoring import layout, runtime
from propensity.scoring.engine import score_shard
from propensity.ui import kv, progress, setup_logging

log = logging.getLogger(__name__)


def model_ref(meta: dict) -> layout.ModelRef:
    return layout.ModelRef(meta["name"], meta["version"], meta["weights"]["sha256"])


def score_shards(cfg: Config, day: dt.date, out: str, shards: list[layout.Shard],
                 scorer: runtime.Scorer, meta: dict, worker: str) -> list[dict[str, Any]]:
    """Score shards in this process, with a progress bar over rows."""
    records = []
    with progress() as bar:
        task = bar.add_task(f"scoring {day} (worker {worker})", total=sum(s.rows for s in shards))
        for shard in shards:
            records.append(
                score_shard(shard, out, scorer, meta["version"], day, cfg, worker=worker,
                            on_rows=lambda n: bar.advance(task, n))
            )
    return records


def _worker_main(cfg_json: str, day_iso: str, version: str, shard_ids: list[str],
                 worker: str, model_runtime: str, threads: int) -> None:
    """Entry point of a spawned local worker (arguments are plain JSON-able values;
    `model_runtime` and `threads` are what the parent chose)."""
    setup_logging()
    cfg = Config.model_validate(json.loads(cfg_json))
    day = dt.date.fromisoformat(day_iso)
    plan = layout.plan_shards(storage.partition(cfg.uri("histories"), day), cfg.scoring.shard_rows)
    wanted = set(shard_ids)
    model, meta = load_model(cfg, version)
    scorer = runtime.scorer(cfg, model, meta, model_runtime, threads)
    out = storage.partition(cfg.uri("predictions"), day)
    score_shards(cfg, day, out, [s for s in plan.shards if s.id in wanted], scorer, meta, worker)


def _run_processes(cfg: Config, day: dt.date, version: str, todo: list[layout.Shard],
                   workers: int, model_runtime: str, threads: int) -> None:
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no forked torch threads
    cfg_json = cfg.model_dump_json()
    procs = []
    for i in range(workers):
        ids = [s.id for s in todo[i::workers]]
        if ids:
            p = ctx.Process(target=_worker_main, name=f"score-worker-{i}",
                            args=(cfg_json, day.isoformat(), version, ids, str(i),
                                  model_runtime, threads))
            p.start()
            procs.append(p)
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise PropensityError(
            f"scoring workers {failed} failed (see their log above); shards they finished are "
            "kept: run the same command again to score only the missing ones"
        )


def run(
    cfg: Config,
    day: dt.date,
    workers: int | None = None,
    worker_index: int | None = None,
    num_workers: int | None = None,
    finalize_only: bool = False,
    restart: bool = False,
    engine: str | None = None,
) -> dict | None:
    """Score histories(D) into predictions(D); the manifest once complete, else None."""

    engine = engine or cfg.scoring.engine
    array = worker_index is not None or num_workers is not None
    if array and (worker_index is None or num_workers is None):
        raise UsageError("--worker-index and --num-workers go together")
    if array and not 0 <= worker_index < num_workers:
        raise UsageError(
            f"--worker-index {worker_index} must be in [0, --num-workers {num_workers})"
        )
    if array and restart:
        raise UsageError(
            "--restart cannot be combined with --worker-index: workers would delete each "
            "other's shards; run `propensity score --date D --restart` once instead"
        )
    if array and engine == "spark":
        raise UsageError("--worker-index is for local array jobs, not --engine spark")
    key = lease.day_key(day) + (f"/worker-{worker_index}-of-{num_workers}" if array else "")
    with lease.acquire(cfg, "score", key) as held:
        return _run(cfg, day, workers, (worker_index, num_workers) if array else None,
                    finalize_only, restart, engine, held)


def _run(cfg: Config, day: dt.date, workers: int | None, array: tuple[int, int] | None,
         finalize_only: bool, restart: bool, engine: str, held: lease.Lease) -> dict | None:
    """`run` under the lease; `array` is (worker index, number of workers) of an array job."""
    started = time.perf_counter()

    histories = storage.partition(cfg.uri("histories"), day)
    out = storage.partition(cfg.uri("predictions"), day)
    plan = layout.plan_shards(histories, cfg.scoring.shard_rows)
    model, meta = load_model(cfg)
    ref = model_ref(meta)
    model_runtime = runtime.choose(cfg.scoring.runtime, meta)
    cores, auto = os.cpu_count() or 1, runtime.AUTO_PLAN[model_runtime]
    if list(model.targets) != cfg.target_names:
        log.warning("champion targets differ from the config's %s",
                    kv(model=model.targets, config=cfg.target_names))
    if layout.prepare(out, plan, ref, list(model.targets), restart):
        log.info("predictions already complete %s", kv(partition=out, model=ref.version))
        return read_manifest(out)
    extra = {"engine": engine, "runtime": model_runtime}
    if finalize_only:
        held.check()
        return layout.finalize(out, plan, ref, day, extra)

    if array:
        worker_index, num_workers = array
        done = layout.done_shards(out)
        mine = [s for s in layout.assign(plan, worker_index, num_workers) if s.id not in done]
        log.info("array worker %s", kv(index=worker_index, of=num_workers, shards=len(mine)))
        # One array worker per container or machine.
        _, threads = runtime.plan(cores, auto, workers=1, threads=cfg.scoring.threads)
        extra["threads"] = threads
        scorer = runtime.scorer(cfg, model, meta, model_runtime, threads)
        score_shards(cfg, day, out, mine, scorer, meta, worker=str(worker_index))
        if layout.missing(out, plan):
            log.info("other workers still have shards to score; the last one finalizes")
            return None
        held.check()
        return layout.finalize(out, plan, ref, day, extra)

    todo = layout.missing(out, plan)
    if engine == "spark":
        log.info("scoring %s", kv(date=day, shards=len(plan.shards), missing=len(todo),
                                  rows=sum(s.rows for s in todo), model=ref.version,
                                  engine=engine, runtime=model_runtime))
        from propensity.scoring.spark import score_on_spark

        score_on_spark(cfg, day, out, todo, meta, model_runtime)
    else:
        processes, threads = runtime.plan(cores, auto, workers or cfg.scoring.workers,
                                          cfg.scoring.threads)
        processes = min(processes, max(1, len(todo)))  # no idle worker processes
        if processes == 1 and not cfg.scoring.threads:
            threads = runtime.plan(cores, auto, 1)[1]  # a lone process: the lone plan's
        extra |= {"workers": processes, "threads": threads}
        log.info("scoring %s", kv(date=day, shards=len(plan.shards), missing=len(todo),
                                  rows=sum(s.rows for s in todo), model=ref.version,
                                  engine=engine, runtime=model_runtime, workers=processes,
                                  threads=threads))
        _score_locally(cfg, day, out, todo, model, meta, model_runtime, processes, threads)
    extra["wall_seconds"] = round(time.perf_counter() - started, 3)
    held.check()  # a run whose lease was taken over publishes nothing
    return layout.finalize(out, plan, ref, day, extra)


def _score_locally(cfg: Config, day: dt.date, out: str, todo: list[layout.Shard], model,
                   meta: dict, model_runtime: str, processes: int, threads: int) -> None:
    """Score `todo` in this process, or in `processes` spawned workers."""
    if processes > 1:
        _run_processes(cfg, day, meta["version"], todo, processes, model_runtime, threads)
    else:
        scorer = runtime.scorer(cfg, model, meta, model_runtime, threads)
        score_shards(cfg, day, out, todo, scorer, meta, worker="0")
