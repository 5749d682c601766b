"""The predictions(D) partition: shard plan, run state, shard files, manifest, marker, latest.json.

Layout (shared/DESIGN.md, "Predictions"):

    predictions/dt=D/part-<shard>.parquet   one file per shard, written whole (`.r<g>.parquet`
                                            after the g-th replacement)
    predictions/dt=D/_scoring.json          run state: model version + sha256, input, shard plan
    predictions/dt=D/_manifest.json         rows, model, input, per-shard counts, timing, stats
    predictions/dt=D/_SUCCESS               written last
    predictions/latest.json                 newest complete day, moved only after its marker
    predictions/_rescore/dt=D/              a replacement being scored (`--rescore`), same layout

Side files start with `_`, so pyarrow, DuckDB and Spark read a day's directory as it is. Every
path stored in them is relative to its dataset's root (`dt=D`, `part-00000.parquet`), so a
storage root copied or moved keeps its state: a rerun there is a no-op or a clean redo.

A shard is a run of consecutive row groups of one input file (at most `scoring.shard_rows`
rows), so the plan is a pure function of the input partition's Parquet footers. A shard is done
exactly when its output file exists (each is written whole), which makes a rerun score only the
missing shards. `_scoring.json` pins the model version and input of a partial run: a run with
another champion or a rewritten input refuses to mix instead of silently combining outputs.

A complete day is immutable by default (`decide`): a rerun with another model keeps it and says
so; `--rescore` scores a replacement under `_rescore/` and `swap`s it in whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.fs as pafs

from propensity import storage
from propensity.errors import BadInput, MissingInput
from propensity.model import stats
from propensity.predictions import MANIFEST
from propensity.ui import kv

log = logging.getLogger(__name__)

STATE = "_scoring.json"
LATEST = "latest.json"
REPLACEMENTS = "_rescore"  # predictions/_rescore/dt=D: a replacement being scored
SHARD_META_KEY = b"propensity.shard"  # Parquet key-value metadata of a shard file: its record
_SHARD_FILE = re.compile(r"part-(\d{5}-\d{5})(?:\.r\d+)?\.parquet$")


@dataclass(frozen=True)
class Shard:
    id: str  # "<file index>-<first row group>", zero-padded
    input_uri: str
    row_groups: list[int]
    rows: int


@dataclass(frozen=True)
class Plan:
    input_partition: str
    shards: list[Shard]

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def input_name(self) -> str:
        """The input partition relative to its dataset's root: `dt=D`."""
        return self.input_partition.rstrip("/").rsplit("/", 1)[-1]

    def fingerprint(self, base: str | None = None) -> str:
        """Identifies the input layout (files relative to the partition, row groups, rows): any
        rewrite of histories(D) changes it, a copy of the root elsewhere does not. `base` puts
        the partition's absolute URI back in, as fingerprints were made before paths were
        stored relative (only to recognise such a run's state)."""
        shards = []
        for s in self.shards:
            name = s.input_uri[len(self.input_partition.rstrip("/")) + 1 :]
            shards.append({**asdict(s), "input_uri": storage.join(base, name) if base else name})
        text = json.dumps(shards, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """What a run records of its input: partition (relative), files, shards, rows, fingerprint."""
        return {
            "partition": self.input_name,
            "files": len({s.input_uri for s in self.shards}),
            "shards": len(self.shards),
            "rows": self.rows,
            "fingerprint": self.fingerprint(),
        }


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    sha256: str


def plan_shards(input_partition: str, shard_rows: int) -> Plan:
    """Shards of a complete histories partition, from its Parquet footers only."""
    files = storage.parquet_files(input_partition)
    if not files:
        raise MissingInput(f"partition {input_partition} is complete but holds no Parquet file")
    shards = []
    for i, uri in enumerate(files):
        meta = storage.open_parquet(uri).metadata
        group: list[int] = []
        rows = 0
        for rg in range(meta.num_row_groups):
            n = meta.row_group(rg).num_rows
            if group and rows + n > shard_rows:
                shards.append(Shard(f"{i:05d}-{group[0]:05d}", uri, group, rows))
                group, rows = [], 0
            group.append(rg)
            rows += n
        if group:
            shards.append(Shard(f"{i:05d}-{group[0]:05d}", uri, group, rows))
    return Plan(input_partition, shards)


def assign(plan: Plan, worker_index: int, num_workers: int) -> list[Shard]:
    """The shards of one worker of an array job: every num_workers-th, by plan order."""
    return plan.shards[worker_index::num_workers]


def shard_file(shard_id: str, generation: int = 0) -> str:
    """A shard's output file name: `part-<id>.parquet`, `part-<id>.r<g>.parquet` in the g-th
    replacement of the day (`--rescore`), so that no name of a replacement is a name of the set
    it replaces: a reader that listed the old set and opens its files after the swap gets
    "not found", never a file of the new set."""
    suffix = f".r{generation}" if generation else ""
    return f"part-{shard_id}{suffix}.parquet"


def replacement(out: str) -> str:
    """Where a replacement of predictions(D) is scored: `predictions/_rescore/dt=D`, hidden from
    readers (a `_` folder) until `swap` puts it in place."""
    root, name = out.rstrip("/").rsplit("/", 1)
    return storage.join(root, REPLACEMENTS, name)


@dataclass(frozen=True)
class Decision:
    """What a run does with predictions(D); `decide` makes it for `score` and `daily` alike.

    action: "score" (score the missing shards of `target` and finalize it), "done" (complete
    with this model already: nothing to do) or "kept" (complete with another model, left as it
    is: `message` names both). `target` is predictions(D), or its replacement (`replacement`)
    when complete predictions are being replaced; `replaces` the model version replaced."""

    action: str
    target: str
    generation: int
    message: str
    replaces: str | None = None


def _state(plan: Plan, model: ModelRef, targets: list[str], generation: int) -> dict[str, Any]:
    return {"model": asdict(model), "targets": targets, "input": plan.summary(),
            "generation": generation}


def _read_state(part: str) -> dict[str, Any] | None:
    uri = storage.join(part, STATE)
    return storage.read_json(uri) if storage.exists(uri) else None


def _input_differences(have: dict[str, Any], plan: Plan) -> list[str]:
    """How a recorded input differs from this run's plan, in words; [] when it is the same.

    A state written before paths were relative holds the absolute partition URI and a
    fingerprint over absolute file URIs: recomputed from that URI, it still matches."""
    problems = []
    recorded = have.get("partition", "")
    legacy = "/" in recorded
    name = recorded.rstrip("/").rsplit("/", 1)[-1]
    if name != plan.input_name:
        problems.append(f"it was scored from histories {name}, this run reads {plan.input_name}")
    want = plan.fingerprint(base=recorded) if legacy else plan.fingerprint()
    if not problems and have.get("fingerprint") != want:
        shape = "{rows} rows in {shards} shards of {files} files"
        then = shape.format(**have) if "rows" in have else "another layout"
        now = shape.format(**plan.summary())
        problems.append(
            f"histories {plan.input_name} were rewritten since: {then} then, {now} now "
            f"(layout fingerprint {have.get('fingerprint')} then, {plan.fingerprint()} now)"
        )
    return problems


def _model_differences(have: dict[str, Any], model: ModelRef, targets: list[str]) -> list[str]:
    problems = []
    if have["model"]["version"] != model.version:
        problems.append(
            f"it was scored with model {have['model']['name']} {have['model']['version']}, "
            f"this run uses {model.name} {model.version}"
        )
    elif have["model"]["sha256"] != model.sha256:
        problems.append(
            f"model {model.version}'s weights changed since (sha256 "
            f"{have['model']['sha256'][:12]} then, {model.sha256[:12]} now)"
        )
    if have["targets"] != targets:
        problems.append(f"it scored targets {have['targets']}, this run scores {targets}")
    return problems


def decide(out: str, plan: Plan, model: ModelRef, targets: list[str], rescore: bool = False,
           restart: bool = False) -> Decision:
    """Reconcile predictions(D) `out` with this run, the one decision of `score` and `daily`.

    A complete day is immutable by default: with the same model and input a rerun is "done";
    made by another model version it is "kept", and the message names both versions and
    `--rescore`. `rescore` scores a replacement beside it instead (`replacement`), which `swap`
    puts in place whole. `restart` discards whatever exists first. Partial output of this run
    is resumed. Raises BadInput (exit 4) when existing output cannot be mixed with this run
    (partial output of another model or input; a complete day of another input) and neither
    option says what to do with it.
    """
    staging = replacement(out)
    if restart:
        discard(out)
        discard(staging)
    if storage.is_complete(staging) and not storage.is_complete(out):
        log.warning("finishing an interrupted replacement %s", kv(partition=out))
        swap(staging, out)
    if not storage.is_complete(out):
        have = _read_state(out)
        generation = have.get("generation", 0) if have else 0
        return _begin(out, plan, model, targets, generation, discard_other=rescore)
    have = _read_state(out)
    if rescore:
        old = have["model"]["version"] if have else None
        generation = (have.get("generation", 0) if have else 0) + 1
        decision = _begin(staging, plan, model, targets, generation, discard_other=True)
        return Decision("score", staging, decision.generation,
                        f"replacing predictions {_name(out)} of model {old} with {model.version}",
                        replaces=old)
    if have is None:
        raise BadInput(f"predictions {out} hold files of an unknown run (no {STATE}); "
                       "rerun with --rescore to replace them")
    generation = have.get("generation", 0)
    if problems := _input_differences(have["input"], plan):
        raise BadInput(
            f"predictions {out} are complete, but {'; '.join(problems)}. Rerun with --rescore "
            "to replace them."
        )
    old = have["model"]["version"]
    if old != model.version:
        day = _name(out).removeprefix("dt=")
        return Decision(
            "kept", out, generation,
            f"predictions {_name(out)} are complete with model {old}; the model for {day} is "
            f"now {model.version}: kept the {old} predictions (a complete day is not rescored "
            f"by default); rerun with --rescore to replace them with {model.version}'s, "
            "atomically",
        )
    if problems := _model_differences(have, model, targets):
        raise BadInput(f"predictions {out} are complete, but {'; '.join(problems)}. Rerun "
                       "with --rescore to replace them.")
    return Decision("done", out, generation,
                    f"predictions {_name(out)} already complete with model {old}")


def _name(part: str) -> str:
    return part.rstrip("/").rsplit("/", 1)[-1]


def _begin(target: str, plan: Plan, model: ModelRef, targets: list[str], generation: int,
           discard_other: bool) -> Decision:
    """Start or resume scoring into the incomplete partition `target`: resume output of this
    very run (its `_scoring.json` matches), discard other output where `discard_other`, else
    refuse it (BadInput). Writes the state of a fresh start."""
    have = _read_state(target)
    if have is not None:
        problems = _model_differences(have, model, targets)
        problems += _input_differences(have["input"], plan)
        if not problems:
            done = len(done_shards(target))
            return Decision("score", target, have.get("generation", 0),
                            f"resuming predictions {_name(target)}: {done} of "
                            f"{len(plan.shards)} shards done")
        if not discard_other:
            raise BadInput(
                f"predictions {target} already hold output that cannot be mixed with this run: "
                f"{'; '.join(problems)}. Rerun with --restart to discard it."
            )
        discard(target)
    elif storage.list_files(target, suffix=".parquet"):
        if not discard_other:
            raise BadInput(
                f"predictions {target} hold files of an unknown run (no {STATE}); "
                "rerun with --restart to discard them"
            )
        discard(target)
    storage.write_json(storage.join(target, STATE), _state(plan, model, targets, generation))
    return Decision("score", target, generation, f"scoring predictions {_name(target)}")


def swap(staging: str, out: str) -> None:
    """Put the complete replacement `staging` in the place of predictions(D) `out`.

    Locally two renames (the old folder aside, the new one in): a reader sees the old complete
    set, briefly no partition (it refuses the day), or the new complete set. S3 has no rename:
    the old marker goes first (readers refuse the day from then), then the old files, then the
    new ones are copied in (server-side) with the marker last. Either way a reader never gets
    a mix: the sets share no file name (`shard_file`)."""
    fs, src = storage.resolve(staging)
    _, dst = storage.resolve(out)
    if isinstance(fs, pafs.LocalFileSystem):
        aside = staging.rstrip("/") + ".replaced"
        storage.delete(aside)
        if storage.exists(out):
            fs.move(dst, storage.resolve(aside)[1])
        fs.move(src, dst)
        storage.delete(aside)
        return
    storage.delete(storage.join(out, storage.MARKER))
    for uri in storage.list_files(out):
        storage.delete(uri)
    names = [u.rsplit("/", 1)[1] for u in storage.list_files(staging)]
    for name in [*names, STATE, MANIFEST, storage.MARKER]:
        try:
            fs.copy_file(f"{src.rstrip('/')}/{name}", f"{dst.rstrip('/')}/{name}")
        except OSError as e:
            raise storage.StorageError(f"cannot copy {name} from {staging} to {out}: {e}") from e
    storage.delete(staging)


def discard(out: str) -> None:
    """Delete a predictions partition, marker first so no reader takes it for complete."""
    if storage.exists(out):
        log.info("discarding existing predictions %s", kv(partition=out))
        storage.delete(storage.join(out, storage.MARKER))
        storage.delete(out)


def done_shards(out: str) -> set[str]:
    """Ids of the shards whose output file exists."""
    done = set()
    for uri in storage.list_files(out, suffix=".parquet"):
        m = _SHARD_FILE.search(uri)
        if m:
            done.add(m.group(1))
    return done


def missing(out: str, plan: Plan) -> list[Shard]:
    done = done_shards(out)
    return [s for s in plan.shards if s.id not in done]


def finalize(
    out: str, plan: Plan, model: ModelRef, day: dt.date, extra: dict | None = None,
    generation: int = 0, latest: bool = True,
) -> dict:
    """Check every shard, write _manifest.json, the marker, then (with `latest`) move
    latest.json; a replacement (`generation` > 0) moves it only once `swap` put it in place.

    Raises MissingInput while shards are missing, BadInput when a shard file disagrees with the
    plan (row count, model version): the partition is then left without a marker.
    """
    files = {
        m.group(1): uri
        for uri in storage.list_files(out, suffix=".parquet")
        if (m := _SHARD_FILE.search(uri))
    }
    planned = {s.id for s in plan.shards}
    strays = sorted(set(files) - planned)
    if strays:
        raise BadInput(
            f"predictions {out}: files of unplanned shards {strays}; rerun with --restart"
        )
    absent = sorted(planned - set(files))
    if absent:
        raise MissingInput(
            f"predictions {out}: {len(absent)} of {len(planned)} shards not scored yet "
            f"(e.g. {absent[:3]}); run the missing workers or `propensity score` again"
        )
    records = {}
    for shard in plan.shards:
        meta = storage.open_parquet(files[shard.id]).schema_arrow.metadata or {}
        if SHARD_META_KEY not in meta:
            raise BadInput(f"{files[shard.id]}: not a shard file of propensity score")
        record = json.loads(meta[SHARD_META_KEY])
        if record["rows"] != shard.rows or record["model_version"] != model.version:
            raise BadInput(
                f"{files[shard.id]}: holds {record['rows']} rows of model "
                f"{record['model_version']}, the plan expects {shard.rows} rows of {model.version}"
            )
        records[shard.id] = record
    summary = stats.merge([r["stats"] for r in records.values()])
    seconds = [r["seconds"] for r in records.values()]
    manifest = {
        "date": day.isoformat(),
        "rows": plan.rows,
        "model": asdict(model),
        "input": plan.summary(),
        "files": [shard_file(shard.id, generation) for shard in plan.shards],
        "generation": generation,
        "shards": {
            # runtime: absent from shards scored before it was recorded.
            sid: {k: r[k] for k in ("input_file", "row_groups", "rows", "seconds", "worker",
                                    "runtime") if k in r}
            for sid, r in records.items()
        },
        "timing": {
            "shard_seconds_total": round(sum(seconds), 3),
            "shard_seconds_max": round(max(seconds), 3),
            "histories_per_second_per_worker": round(plan.rows / max(sum(seconds), 1e-9), 1),
            "finalized_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        "stats": summary,
        **(extra or {}),
    }
    storage.write_json(storage.join(out, MANIFEST), manifest)
    storage.mark_complete(out)
    if latest:
        move_latest(out, day, manifest)
    log.info("predictions complete %s", kv(partition=out, rows=plan.rows, model=model.version))
    return manifest


def move_latest(out: str, day: dt.date, manifest: dict) -> None:
    """Point latest.json at day D, unless it already points at a later complete day. Its
    `partition` is relative to the predictions root, where latest.json sits: `dt=D`."""
    root = out.rsplit("/", 1)[0]
    latest = storage.join(root, LATEST)
    if storage.exists(latest):
        current = storage.read_json(latest)
        if current.get("date", "") > day.isoformat():
            return  # a backfill of an older day must not move readers backwards
    storage.write_json(
        latest,
        {
            "date": day.isoformat(),
            "partition": out.rstrip("/").rsplit("/", 1)[-1],
            "rows": manifest["rows"],
            "model_version": manifest["model"]["version"],
        },
    )
