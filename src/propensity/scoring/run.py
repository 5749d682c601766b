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

The model is the champion as of D (`choose_model`: the newest champion trained on or before D,
so a backfill never looks ahead), or the version `--model` names. What happens to existing
predictions(D) is `layout.decide`'s call, the same for `score` and `daily`: a complete day is
kept (a changed model is named in a warning) unless `--rescore` asks for a replacement, which is
scored aside and swapped in whole.

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
from dataclasses import dataclass
from typing import Any

from propensity import lease, storage
from propensity.config import Config
from propensity.errors import MissingInput, PropensityError, UsageError
from propensity.predictions import read_manifest
from propensity.registry import load_model, store
from propensity.scoring import layout, runtime
from propensity.scoring.engine import score_shard
from propensity.ui import kv, progress, setup_logging

log = logging.getLogger(__name__)


def model_ref(meta: dict) -> layout.ModelRef:
    return layout.ModelRef(meta["name"], meta["version"], meta["weights"]["sha256"])


def choose_model(cfg: Config, day: dt.date, explicit: str | None = None) -> tuple[str, str]:
    """(version, why) of the model that scores `day`: `explicit` (`--model`) where given, else
    the champion as of the day (`store.champion_as_of`: never one trained on labels after it).
    MissingInput (exit 3) where there is none, saying how to override."""
    if explicit:
        trained = store.training_date(store.read_metadata(cfg, explicit))
        if trained <= day:
            return explicit, f"--model {explicit} (trained on {trained})"
        log.warning("scoring a past day with a later model %s",
                    kv(date=day, model=explicit, trained=trained))
        return explicit, (f"--model {explicit}, trained on {trained}, after {day}: its scores "
                          f"of {day} look ahead")
    choice = store.champion_as_of(cfg, day)
    if choice.version is None:
        raise MissingInput(
            f"{choice.reason}; to score {day} anyway, name a version: "
            f"propensity score --date {day} --model VERSION"
        )
    return choice.version, choice.reason


@dataclass(frozen=True)
class Outcome:
    """What a run did with predictions(D): `action` of its `layout.Decision` ("score", "done"
    or "kept"), the decision's one-line `message`, and the day's manifest (None while shards of
    an array job are still missing)."""

    action: str
    message: str
    manifest: dict | None


def score_shards(cfg: Config, day: dt.date, out: str, shards: list[layout.Shard],
                 scorer: runtime.Scorer, meta: dict, worker: str,
                 generation: int = 0) -> list[dict[str, Any]]:
    """Score shards in this process into `out`, with a progress bar over rows."""
    records = []
    with progress() as bar:
        task = bar.add_task(f"scoring {day} (worker {worker})", total=sum(s.rows for s in shards))
        for shard in shards:
            records.append(
                score_shard(shard, out, scorer, meta["version"], day, cfg, worker=worker,
                            on_rows=lambda n: bar.advance(task, n), generation=generation)
            )
    return records


def _worker_main(cfg_json: str, day_iso: str, version: str, shard_ids: list[str],
                 worker: str, model_runtime: str, threads: int, out: str,
                 generation: int) -> None:
    """Entry point of a spawned local worker (arguments are plain JSON-able values;
    `model_runtime`, `threads`, `out` and `generation` are what the parent chose)."""
    setup_logging()
    cfg = Config.model_validate(json.loads(cfg_json))
    day = dt.date.fromisoformat(day_iso)
    plan = layout.plan_shards(storage.partition(cfg.uri("histories"), day), cfg.scoring.shard_rows)
    wanted = set(shard_ids)
    model, meta = load_model(cfg, version)
    scorer = runtime.scorer(cfg, model, meta, model_runtime, threads)
    score_shards(cfg, day, out, [s for s in plan.shards if s.id in wanted], scorer, meta, worker,
                 generation)


def _run_processes(cfg: Config, day: dt.date, version: str, todo: list[layout.Shard],
                   workers: int, model_runtime: str, threads: int, out: str,
                   generation: int) -> None:
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter: no forked torch threads
    cfg_json = cfg.model_dump_json()
    procs = []
    for i in range(workers):
        ids = [s.id for s in todo[i::workers]]
        if ids:
            p = ctx.Process(target=_worker_main, name=f"score-worker-{i}",
                            args=(cfg_json, day.isoformat(), version, ids, str(i),
                                  model_runtime, threads, out, generation))
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


def run(cfg: Config, day: dt.date, **options) -> dict | None:
    """Score histories(D) into predictions(D) (`score_day`); the manifest once complete."""
    return score_day(cfg, day, **options).manifest


def score_day(
    cfg: Config,
    day: dt.date,
    workers: int | None = None,
    worker_index: int | None = None,
    num_workers: int | None = None,
    finalize_only: bool = False,
    restart: bool = False,
    engine: str | None = None,
    rescore: bool = False,
    model: str | None = None,
) -> Outcome:
    """Score histories(D) into predictions(D) with the model `choose_model` picks, as
    `layout.decide` says: `score` and `daily` both run this."""

    engine = engine or cfg.scoring.engine
    array = worker_index is not None or num_workers is not None
    if array and (worker_index is None or num_workers is None):
        raise UsageError("--worker-index and --num-workers go together")
    if array and not 0 <= worker_index < num_workers:
        raise UsageError(
            f"--worker-index {worker_index} must be in [0, --num-workers {num_workers})"
        )
    for flag, given in (("--restart", restart), ("--rescore", rescore)):
        if array and given:
            raise UsageError(
                f"{flag} cannot be combined with --worker-index: workers would delete each "
                f"other's shards; run `propensity score --date D {flag}` once instead"
            )
    if finalize_only and rescore:
        raise UsageError("--finalize only completes a run; --rescore starts one")
    if array and engine == "spark":
        raise UsageError("--worker-index is for local array jobs, not --engine spark")
    key = lease.day_key(day) + (f"/worker-{worker_index}-of-{num_workers}" if array else "")
    with lease.acquire(cfg, "score", key) as held:
        return _run(cfg, day, workers, (worker_index, num_workers) if array else None,
                    finalize_only, restart, rescore, engine, model, held)


def _run(cfg: Config, day: dt.date, workers: int | None, array: tuple[int, int] | None,
         finalize_only: bool, restart: bool, rescore: bool, engine: str,
         explicit: str | None, held: lease.Lease) -> Outcome:
    """`score_day` under the lease; `array` is (worker index, number of workers) of an array job."""
    started = time.perf_counter()

    histories = storage.partition(cfg.uri("histories"), day)
    out = storage.partition(cfg.uri("predictions"), day)
    plan = layout.plan_shards(histories, cfg.scoring.shard_rows)
    version, why = choose_model(cfg, day, explicit)
    log.info("model for %s %s", day, kv(model=version, reason=repr(why)))
    model, meta = load_model(cfg, version)
    ref = model_ref(meta)
    model_runtime = runtime.choose(cfg.scoring.runtime, meta)
    cores, auto = os.cpu_count() or 1, runtime.AUTO_PLAN[model_runtime]
    if list(model.targets) != cfg.target_names:
        log.warning("champion targets differ from the config's %s",
                    kv(model=model.targets, config=cfg.target_names))
    decision = layout.decide(out, plan, ref, list(model.targets), rescore, restart)
    if decision.action == "kept":
        log.warning(decision.message)
    else:
        log.info(decision.message)
    if decision.action != "score":
        return Outcome(decision.action, decision.message, read_manifest(out))
    target, generation = decision.target, decision.generation
    extra: dict[str, Any] = {"engine": engine, "runtime": model_runtime,
                             "model_choice": {"version": version, "reason": why}}
    if decision.replaces:
        extra["replaces"] = {"model_version": decision.replaces}

    def publish() -> Outcome:
        held.check()  # a run whose lease was taken over publishes nothing
        manifest = layout.finalize(target, plan, ref, day, extra, generation,
                                   latest=target == out)
        if target != out:
            layout.swap(target, out)
            layout.move_latest(out, day, manifest)
            log.info("predictions replaced %s", kv(partition=out, model=version,
                                                   replaced=decision.replaces))
        return Outcome("score", decision.message, manifest)

    if finalize_only:
        return publish()

    if array:
        worker_index, num_workers = array
        done = layout.done_shards(target)
        mine = [s for s in layout.assign(plan, worker_index, num_workers) if s.id not in done]
        log.info("array worker %s", kv(index=worker_index, of=num_workers, shards=len(mine)))
        # One array worker per container or machine.
        _, threads = runtime.plan(cores, auto, workers=1, threads=cfg.scoring.threads)
        extra["threads"] = threads
        scorer = runtime.scorer(cfg, model, meta, model_runtime, threads)
        score_shards(cfg, day, target, mine, scorer, meta, str(worker_index), generation)
        if layout.missing(target, plan):
            log.info("other workers still have shards to score; the last one finalizes")
            return Outcome("score", decision.message, None)
        return publish()

    todo = layout.missing(target, plan)
    if engine == "spark":
        log.info("scoring %s", kv(date=day, shards=len(plan.shards), missing=len(todo),
                                  rows=sum(s.rows for s in todo), model=ref.version,
                                  engine=engine, runtime=model_runtime))
        from propensity.scoring.spark import score_on_spark

        score_on_spark(cfg, day, target, todo, meta, model_runtime, generation)
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
        _score_locally(cfg, day, target, todo, model, meta, model_runtime, processes, threads,
                       generation)
    extra["wall_seconds"] = round(time.perf_counter() - started, 3)
    return publish()


def _score_locally(cfg: Config, day: dt.date, out: str, todo: list[layout.Shard], model,
                   meta: dict, model_runtime: str, processes: int, threads: int,
                   generation: int) -> None:
    """Score `todo` into `out` in this process, or in `processes` spawned workers."""
    if processes > 1:
        _run_processes(cfg, day, meta["version"], todo, processes, model_runtime, threads, out,
                       generation)
    else:
        scorer = runtime.scorer(cfg, model, meta, model_runtime, threads)
        score_shards(cfg, day, out, todo, scorer, meta, "0", generation)
