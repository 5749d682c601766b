"""The predictions(D) partition: shard plan, run state, shard files, manifest, marker, latest.json.

Layout (shared/DESIGN.md, "Predictions"):

    predictions/dt=D/part-<shard>.parquet   one file per shard, written whole
    predictions/dt=D/_scoring.json          run state: model version + sha256, input, shard plan
    predictions/dt=D/_manifest.json         rows, model, input, per-shard counts, timing, stats
    predictions/dt=D/_SUCCESS               written last
    predictions/latest.json                 newest complete day, moved only after its marker

Side files start with `_`, so pyarrow, DuckDB and Spark read a day's directory as it is. Every
path stored in them is relative to its dataset's root (`dt=D`, `part-00000.parquet`), so a
storage root copied or moved keeps its state: a rerun there is a no-op or a clean redo.

A shard is a run of consecutive row groups of one input file (at most `scoring.shard_rows`
rows), so the plan is a pure function of the input partition's Parquet footers. A shard is done
exactly when its output file exists (each is written whole), which makes a rerun score only the
missing shards. `_scoring.json` pins the model version and input of a partial run: a run with
another champion or a rewritten input refuses to mix instead of silently combining outputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

from propensity import storage
from propensity.errors import BadInput, MissingInput
from propensity.model import stats
from propensity.predictions import MANIFEST
from propensity.ui import kv

log = logging.getLogger(__name__)

STATE = "_scoring.json"
LATEST = "latest.json"
SHARD_META_KEY = b"propensity.shard"  # Parquet key-value metadata of a shard file: its record
_SHARD_FILE = re.compile(r"part-(\d{5}-\d{5})\.parquet$")


@dataclass(frozen=True)
class Shard:
    id: str  # "<file index>-<first row group>", zero-padded
    input_uri: str
    row_groups: list[int]
    rows: int

    @property
    def file_name(self) -> str:
        return f"part-{self.id}.parquet"


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


def _state(plan: Plan, model: ModelRef, targets: list[str]) -> dict[str, Any]:
    return {"model": asdict(model), "targets": targets, "input": plan.summary()}


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


def prepare(
    out: str, plan: Plan, model: ModelRef, targets: list[str], restart: bool
) -> bool:
    """Reconcile predictions(D) with this run; True when it is already complete for it.

    Raises BadInput when existing output (partial or complete) was made by another model
    version or from another input layout, unless `restart` discards it first.
    """
    want = _state(plan, model, targets)
    if restart:
        discard(out)
    have_state = storage.exists(storage.join(out, STATE))
    if have_state:
        have = storage.read_json(storage.join(out, STATE))
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
        problems += _input_differences(have["input"], plan)
        if have["targets"] != targets:
            problems.append(f"it scored targets {have['targets']}, this run scores {targets}")
        if problems:
            raise BadInput(
                f"predictions {out} already hold output that cannot be mixed with this run: "
                f"{'; '.join(problems)}. Rerun with --restart to discard it."
            )
        return storage.is_complete(out)
    if storage.list_files(out, suffix=".parquet") or storage.is_complete(out):
        raise BadInput(
            f"predictions {out} hold files of an unknown run (no {STATE}); "
            "rerun with --restart to discard them"
        )
    storage.write_json(storage.join(out, STATE), want)
    return False


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
    out: str, plan: Plan, model: ModelRef, day: dt.date, extra: dict | None = None
) -> dict:
    """Check every shard, write _manifest.json, the marker, then move latest.json.

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
        "files": [shard.file_name for shard in plan.shards],
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
    _move_latest(out, day, manifest)
    log.info("predictions complete %s", kv(partition=out, rows=plan.rows, model=model.version))
    return manifest


def _move_latest(out: str, day: dt.date, manifest: dict) -> None:
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
