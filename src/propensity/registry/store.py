"""The model registry: versions under `models/<name>/<version>/` and a champion pointer.

Layout (any storage URI, local or S3):
    models/<name>/<version>/weights.safetensors   the weights (safetensors; never pickle)
    models/<name>/<version>/model.onnx            optional: the same model as ONNX for fast scoring
                                                  (`onnx_export`; its sha256 in model.json)
    models/<name>/<version>/reference.json        input and score statistics on the validation set
    models/<name>/<version>/model.json            metadata, written LAST: a version is complete
                                                  only when it exists
    models/<name>/<version>/_claim.json           who took the version number (atomic create,
                                                  written FIRST): a number is never given twice
    models/<name>/champion.json                   {"version": ..., "history": [moves]}

Versions are named `<training date>.<n>` (e.g. `2026-01-20.1`, n counts runs of that date).
Only the champion pointer moves on promotion and rollback; versions are never changed after
their model.json is written. This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from propensity import lease, storage
from propensity.config import Config, ModelConfig
from propensity.errors import BadInput, LeaseHeld, MissingInput, UsageError

WEIGHTS = "weights.safetensors"
ONNX = "model.onnx"  # written by `onnx_export` (which imports torch, so not imported here)
METADATA = "model.json"
REFERENCE = "reference.json"
CHAMPION = "champion.json"
CLAIM = "_claim.json"
_MAX_CLAIMS = 1000  # version numbers tried before giving up (a runaway, not contention)
CHAMPION_WAIT_S = 30.0  # how long a champion move waits for another one to finish
_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(\d+)$")


def root(cfg: Config) -> str:
    """URI of this config's model name in the registry: `models/<name>`."""
    return storage.join(cfg.uri("models"), cfg.model.name)


def version_uri(cfg: Config, version: str) -> str:
    return storage.join(root(cfg), version)


def _sort_key(version: str) -> tuple:
    m = _VERSION.match(version)
    return (m.group(1), int(m.group(2))) if m else (version, 0)


def version_names(cfg: Config) -> list[str]:
    """Names of the complete versions (those with a model.json), oldest first."""
    base = root(cfg)
    names = set()
    for uri in storage.list_files(base, suffix="/" + METADATA, recursive=True):
        rel = uri[len(base) :].strip("/").split("/")
        if len(rel) == 2:
            names.add(rel[0])
    return sorted(names, key=_sort_key)


def next_version(cfg: Config, day: dt.date) -> str:
    """Claim a fresh version name for a training run of `day`: `<day>.<n>`, n above any folder
    of that day (complete or not, so a crashed run's leftovers are never reused), taken by the
    atomic create of its `_claim.json`: two runs publishing at once get two numbers."""
    base = root(cfg)
    used = [0]
    for uri in storage.list_files(base, recursive=True):
        first = uri[len(base) :].strip("/").split("/")[0]
        m = _VERSION.match(first)
        if m and m.group(1) == day.isoformat():
            used.append(int(m.group(2)))
    claim = {"claimed_at": _now(), "host": socket.gethostname(), "pid": os.getpid()}
    body = (json.dumps(claim, sort_keys=True) + "\n").encode()
    for n in range(max(used) + 1, max(used) + 1 + _MAX_CLAIMS):
        version = f"{day.isoformat()}.{n}"
        # A folder holding only a claim (its run is publishing) is hidden from the listing
        # above: the create fails there and the next number is tried.
        if storage.create_exclusive(storage.join(version_uri(cfg, version), CLAIM), body):
            return version
    raise RuntimeError(f"{base}: no free version number for {day} after {_MAX_CLAIMS} tries")


def read_metadata(cfg: Config, version: str) -> dict:
    """model.json of a version; MissingInput (exit 3) when the version is absent or incomplete."""
    uri = storage.join(version_uri(cfg, version), METADATA)
    if not storage.exists(uri):
        known = ", ".join(version_names(cfg)[-5:]) or "none"
        raise MissingInput(f"model version {version!r} not found at {uri} (latest: {known})")
    return storage.read_json(uri)


def read_reference(cfg: Config, version: str) -> dict:
    """reference.json (monitoring statistics) of a version."""
    uri = storage.join(version_uri(cfg, version), REFERENCE)
    if not storage.exists(uri):
        raise MissingInput(f"reference statistics not found: {uri}")
    return storage.read_json(uri)


def read_champion(cfg: Config) -> dict | None:
    """The champion pointer ({"version", "history", ...}), or None before the first model."""
    uri = storage.join(root(cfg), CHAMPION)
    return storage.read_json(uri) if storage.exists(uri) else None


def champion_version(cfg: Config) -> str | None:
    pointer = read_champion(cfg)
    return pointer["version"] if pointer else None


def training_date(meta: dict) -> dt.date:
    """The last day of labels a version was trained on: model.json's `training_date` (the date
    in its name for a version that lacks it)."""
    return dt.date.fromisoformat(str(meta.get("training_date") or meta["version"].split(".")[0]))


@dataclass(frozen=True)
class AsOf:
    """The champion for scoring a day: `version` (None where there is none) and why."""

    version: str | None
    reason: str


def champion_as_of(cfg: Config, day: dt.date) -> AsOf:
    """The champion as of `day`: the newest move of champion.json's history (promotion, gate
    approval or rollback) to a version trained on or before `day`, so that a past day is never
    scored by a model that learnt from labels after it. Today's champion, trained on or before
    today, is the newest such move: the normal daily run keeps using it.

    Moves are ordered by their place in the history, not by their wall-clock `at`: the gate
    promotes D's model after D ends (its labels are complete only then), and in a backfill every
    move postdates every day scored."""
    pointer = read_champion(cfg)
    where = storage.join(root(cfg), CHAMPION)
    if not pointer:
        return AsOf(None, f"no champion model at {where}: train one first "
                          "(propensity train --date D)")
    trained: dict[str, dt.date] = {}
    for move in reversed(pointer["history"]):
        version = move["version"]
        if version not in trained:
            trained[version] = training_date(read_metadata(cfg, version))
        if trained[version] <= day:
            if version == pointer["version"]:
                return AsOf(version, f"the champion, trained on {trained[version]}")
            current = pointer["version"]
            when = trained.get(current) or training_date(read_metadata(cfg, current))
            return AsOf(
                version,
                f"the newest champion trained on or before {day} ({move['action']} at "
                f"{move['at']}, trained on {trained[version]}); the champion {current} was "
                f"trained on {when}, after {day}",
            )
    first = min(trained.values(), default=None)
    return AsOf(
        None,
        f"no champion as of {day}: none of the {len(trained)} versions in the history of {where} "
        f"was trained on or before {day} (the earliest on {first})",
    )


def who(by: str | None = None) -> str:
    """Who moves the pointer: `--by`, else $USER, else the login name."""
    if by:
        return by
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@contextmanager
def champion_lock(cfg: Config) -> Iterator[None]:
    """Champion moves are a read-modify-write of champion.json: one mover at a time, under the
    lease `champion/<name>`. A move takes a moment, so a second mover (a training's gate beside
    a person's rollback) waits for the lease up to CHAMPION_WAIT_S instead of failing at once."""
    deadline = time.monotonic() + CHAMPION_WAIT_S
    while True:
        held = lease.acquire(cfg, "champion", cfg.model.name)
        try:
            held.__enter__()
            break
        except LeaseHeld:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield
    finally:
        held.__exit__(None, None, None)


def move_champion(cfg: Config, version: str, action: str, by: str | None, reason: str) -> dict:
    """Point the champion at `version` (one atomic write, under `champion_lock`) and record who,
    why and from where."""
    with champion_lock(cfg):
        return _move_champion(cfg, version, action, by, reason)


def _move_champion(cfg: Config, version: str, action: str, by: str | None, reason: str) -> dict:
    read_weights(cfg, version)  # never point at a version that is incomplete or would not load
    pointer = read_champion(cfg) or {"name": cfg.model.name, "version": None, "history": []}
    move = {
        "at": _now(),
        "action": action,
        "version": version,
        "from": pointer["version"],
        "by": who(by),
        "reason": reason,
    }
    pointer = {
        **pointer,
        "version": version,
        "updated_at": move["at"],
        "history": [*pointer["history"], move],
    }
    storage.write_json(storage.join(root(cfg), CHAMPION), pointer)
    return move


def promote(cfg: Config, version: str, by: str | None, reason: str, force: bool = False) -> dict:
    """Make `version` the champion by hand. A version the gate rejected needs `force`."""
    meta = read_metadata(cfg, version)
    gate = meta.get("gate") or {}
    decision = gate.get("decision")
    if decision != "approved" and not force:
        raise UsageError(
            f"model version {version} was {decision or 'not gated'} by the gate "
            f"({'; '.join(gate.get('reasons', []))}); pass --force to promote it anyway"
        )
    with champion_lock(cfg):
        if champion_version(cfg) == version:
            raise UsageError(f"model version {version} is already the champion")
        return _move_champion(cfg, version, "promote", by, reason)


def champion_stack(pointer: dict) -> list[str]:
    """The champions a rollback can return to, oldest first, the current one last: the pointer's
    history replayed, each promotion (gate, promote) pushing its version, each rollback popping
    back to the version it moved to. So rollbacks walk back through the promotions in reverse
    and stop where the history starts, even when an old version was promoted again."""
    stack: list[str] = []
    for move in pointer["history"]:
        if move["action"] != "rollback":
            stack.append(move["version"])
            continue
        # One pop on a history this code wrote; more (or a restart) on a history that an
        # earlier rule of rollback wrote, so the stack always ends at the pointer's version.
        if stack:
            stack.pop()
        while stack and stack[-1] != move["version"]:
            stack.pop()
        stack = stack or [move["version"]]
    return stack


def rollback_target(pointer: dict) -> str | None:
    """The champion before the current one, or None at the start of the promotion history."""
    stack = champion_stack(pointer)
    return stack[-2] if len(stack) > 1 and stack[-1] == pointer["version"] else None


def rollback(cfg: Config, by: str | None, reason: str) -> dict:
    """Move the champion pointer back to the previous champion; MissingInput (exit 3) where
    there is none: no pointer, or the promotion history already starts at the current one."""
    with champion_lock(cfg):  # the target is chosen from the pointer this move replaces
        return _rollback(cfg, by, reason)


def _rollback(cfg: Config, by: str | None, reason: str) -> dict:
    pointer = read_champion(cfg)
    if not pointer:
        where = storage.join(root(cfg), CHAMPION)
        raise MissingInput(f"no champion at {where}: nothing to roll back")
    target = rollback_target(pointer)
    if not target:
        where = storage.join(root(cfg), CHAMPION)
        raise MissingInput(
            f"champion {pointer['version']} has no earlier champion to roll back to: the "
            f"promotion history in {where} ({len(pointer['history'])} moves) starts there; "
            "promote a version by name instead (`propensity models promote VERSION`)"
        )
    return _move_champion(cfg, target, "rollback", by, reason)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(cfg: Config, version: str, weights: bytes, metadata: dict, reference: dict,
            onnx: tuple[bytes, dict] | None = None) -> dict:
    """Write a version: weights, the ONNX artefact when given (`onnx_export.build`), reference
    statistics, then model.json (last, with the sha256 of each file). Returns the metadata as
    written. Does not move the champion."""
    base = version_uri(cfg, version)
    storage.write_bytes(storage.join(base, WEIGHTS), weights)
    metadata = {
        **metadata,
        "name": cfg.model.name,
        "version": version,
        "weights": {"file": WEIGHTS, "sha256": sha256(weights), "bytes": len(weights)},
    }
    if onnx is not None:
        data, record = onnx
        storage.write_bytes(storage.join(base, ONNX), data)
        metadata["onnx"] = {"file": ONNX, "sha256": sha256(data), "bytes": len(data), **record}
    storage.write_json(storage.join(base, REFERENCE), reference)
    storage.write_json(storage.join(base, METADATA), metadata)
    return metadata


def read_weights(cfg: Config, version: str, meta: dict | None = None) -> tuple[dict, dict]:
    """The verified state dict (torch tensors) and metadata of a version.

    Raises BadInput (exit 4) naming the file when its sha256 differs from model.json
    (tampered or truncated) or it is not valid safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    meta = meta or read_metadata(cfg, version)
    uri = storage.join(version_uri(cfg, version), WEIGHTS)
    if not storage.exists(uri):
        raise BadInput(f"{uri}: weights file missing although {METADATA} exists")
    data = storage.read_bytes(uri)
    expected = meta["weights"]["sha256"]
    actual = sha256(data)
    if actual != expected:
        raise BadInput(
            f"{uri}: sha256 {actual[:16]}... does not match {expected[:16]}... recorded in "
            f"{METADATA} ({len(data)} of {meta['weights']['bytes']} bytes): the file was "
            "changed or truncated; refusing to load it"
        )
    try:
        return load_safetensors(data), meta
    except SafetensorError as e:
        raise BadInput(f"{uri}: not a valid safetensors file: {e}") from None


def read_onnx(cfg: Config, version: str, meta: dict) -> bytes | None:
    """The verified bytes of a version's model.onnx, None for a version published without one.

    Raises BadInput (exit 4) naming the file when it is missing although model.json records it,
    or its sha256 differs from model.json (tampered or truncated)."""
    record = meta.get("onnx")
    if not record:
        return None
    uri = storage.join(version_uri(cfg, version), record["file"])
    if not storage.exists(uri):
        raise BadInput(f"{uri}: ONNX model missing although {METADATA} records it")
    data = storage.read_bytes(uri)
    actual = sha256(data)
    if actual != record["sha256"]:
        raise BadInput(
            f"{uri}: sha256 {actual[:16]}... does not match {record['sha256'][:16]}... recorded "
            f"in {METADATA} ({len(data)} of {record['bytes']} bytes): the file was changed or "
            "truncated; refusing to load it"
        )
    return data


# Model fields that an older model.json lacks, with the value that means what the model did
# before the field existed (session counts came in session 24, item shares in session 25).
MODEL_FIELDS_BEFORE = {"session_counts": False, "item_share": False}


def build_model(meta: dict):
    """An untrained PropensityModel with the architecture recorded in `meta`."""
    from propensity.model.batches import FeatureSpec
    from propensity.model.network import PropensityModel

    spec = FeatureSpec.from_dict(meta["feature_spec"])
    return PropensityModel(ModelConfig(**{**MODEL_FIELDS_BEFORE, **meta["model"]}),
                           meta["types"], meta["targets"], spec.items)


def load_model(cfg: Config, version: str | None = None):
    """Load a version (default: the champion) as `(PropensityModel in eval mode, metadata)`.

    The weights' sha256 is verified against model.json first (BadInput, exit 4, naming the file
    on mismatch); MissingInput (exit 3) when there is no champion or no such version.
    `model.spec` is the FeatureSpec to encode histories with; `metadata["version"]` its name.
    """
    if version is None:
        version = champion_version(cfg)
        if version is None:
            raise MissingInput(
                f"no champion model at {storage.join(root(cfg), CHAMPION)}: "
                "train one first (propensity train --date D)"
            )
    state, meta = read_weights(cfg, version)
    _check_feature_spec(meta)
    model = build_model(meta)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise BadInput(
            f"{version_uri(cfg, version)}: its weights do not fit the model this code builds "
            f"from its model.json ({str(e).splitlines()[-1].strip()}); "
            "train a new version with `propensity train --date D --cold`"
        ) from None
    model.eval()
    return model, meta


def _check_feature_spec(meta: dict) -> None:
    """Refuse a model whose inputs were encoded by another version of the feature code: its
    scores would silently change meaning."""
    from propensity.model.batches import FEATURE_SPEC_VERSION

    trained = (meta.get("feature_spec") or {}).get("version")
    if trained != FEATURE_SPEC_VERSION:
        raise BadInput(
            f"model {meta.get('version')} was trained with feature spec version {trained}, this "
            f"code encodes version {FEATURE_SPEC_VERSION}: train a new version with "
            "`propensity train --date D --cold`, or score with the code version it was built with "
            f"({meta.get('code_version')})"
        )


def weights_bytes(model) -> bytes:
    """A model's state dict serialised as safetensors (CPU, contiguous tensors)."""
    from safetensors.torch import save as save_safetensors

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_safetensors(state)
