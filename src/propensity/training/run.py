"""`propensity train --date D`: the training job, top to bottom.

1. examples: histories(D-H) inputs, labels from histories(D), hash split;
2. start: warm from the champion when the architecture matches (training.warm_epochs), else
   cold (training.max_epochs; a mismatching champion requires --cold);
3. fit with Lightning (resumable from the local work folder, which the holder of the lease
   `train/dt=D` owns: a second training of the day refuses, exit 13), keep the best epoch;
4. gate: candidate and champion scored on the same validation examples;
5. publish the version (weights, reference statistics, model.json last); approved -> the
   champion pointer moves; rejected -> GateRejected (exit 10), champion untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
import warnings

import numpy as np
import torch

from propensity import __version__, lease, storage
from propensity.config import Config
from propensity.errors import BadInput, UsageError
from propensity.model import stats
from propensity.model.batches import encode, length_buckets
from propensity.model.metrics import metrics
from propensity.model.network import PropensityModel
from propensity.registry import onnx_export, store
from propensity.training import baseline
from propensity.training.examples import Examples, load_examples
from propensity.training.gate import GateRejected, decide, predict
from propensity.ui import console, kv

log = logging.getLogger(__name__)
# Training rows that set the profile inputs' scaling and fit the wide part: the regression
# should see what the baseline sees (on 80k profiles, 280k rows, a 100k sample lost 0.0008 AUROC
# to it), within memory (500k rows x ~200 inputs: 0.4 GB, twice that as sklearn's float64).
INIT_ROWS = 500_000


def device_settings(cfg: Config) -> tuple[str, str]:
    """(accelerator, precision) for Lightning: CUDA with bf16-mixed (16-mixed where bf16 is not
    supported) when available and allowed, else CPU in 32-bit."""
    want = cfg.training.accelerator
    cuda = torch.cuda.is_available()
    if want == "gpu" and not cuda:
        raise UsageError("training.accelerator=gpu but no CUDA device is available")
    accelerator = "gpu" if cuda and want in ("auto", "gpu") else "cpu"
    precision = cfg.training.precision
    if precision == "auto":
        if accelerator == "gpu":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            precision = "32-true"
    return accelerator, precision


def architecture_mismatch(candidate: dict, champion: dict) -> list[str]:
    """Human-readable differences between two `PropensityModel.architecture()` dicts."""
    return [
        f"{k}: champion {champion.get(k)!r} vs config {candidate.get(k)!r}"
        for k in sorted(set(candidate) | set(champion))
        if candidate.get(k) != champion.get(k)
    ]


def work_folder(cfg: Config, day: dt.date, parent: str | None, cold: bool) -> str:
    """Local folder of this run's resumable state, keyed by date, config and starting point:
    re-running the same command resumes; any change starts afresh."""
    key = json.dumps(
        {
            "day": day.isoformat(),
            "histories": cfg.uri("histories"),
            "models": cfg.uri("models"),
            "model": cfg.model.model_dump(),
            "training": cfg.training.model_dump(exclude={"work_dir"}),
            "targets": [t.model_dump() for t in cfg.targets],
            "types": cfg.events.types,
            "parent": parent,
            "cold": cold,
            "code": __version__,
        },
        sort_keys=True,
    )
    base = cfg.training.work_dir or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "propensity", "train"
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(base, f"{cfg.model.name}-{day.isoformat()}-{digest}")


def _starting_point(cfg: Config, cold: bool) -> tuple[PropensityModel, str | None, str | None]:
    """(initial model, parent version it was warm-started from, current champion version)."""
    model = PropensityModel.from_config(cfg)  # seeded by the caller
    champion = store.champion_version(cfg)
    if champion is None:
        return model, None, None
    meta = store.read_metadata(cfg, champion)
    recorded = {**store.MODEL_FIELDS_BEFORE, **meta.get("architecture", {})}
    diff = architecture_mismatch(model.architecture(), recorded)
    if cold:
        return model, None, champion
    if diff:
        raise UsageError(
            f"cannot warm-start from champion {champion}: its architecture differs from the "
            f"config ({'; '.join(diff)}); train from scratch with --cold"
        )
    state, _ = store.read_weights(cfg, champion, meta)
    model.load_state_dict(state, strict=True)
    return model, champion, champion


def fit(cfg: Config, examples: Examples, model, epochs: int, folder: str, callbacks=()) -> dict:
    """Train with Lightning, resuming from `folder/last.ckpt` if present; leaves the best
    weights (lowest val loss) in `model`. Returns what happened, for model.json."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
    from safetensors.torch import load_file

    from propensity.training.lightning import (
        BestWeights,
        PropensityTask,
        loader,
        validation_loss,
    )

    # Lightning sets its own loggers to INFO on import; keep its banners out of job logs.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    accelerator, precision = device_settings(cfg)
    t = cfg.training
    os.makedirs(folder, exist_ok=True)
    task = PropensityTask(model, t.learning_rate, t.weight_decay, t.seed)
    best = BestWeights(folder)
    cbs = [
        EarlyStopping(monitor="val_loss", mode="min", patience=t.early_stopping_patience),
        ModelCheckpoint(
            dirpath=folder,
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        ),
        best,
        *callbacks,
    ]
    if console.is_terminal:
        cbs.append(RichProgressBar(console_kwargs={"stderr": True}))
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=epochs,
        deterministic=True if accelerator == "cpu" else "warn",
        logger=False,
        enable_model_summary=False,
        enable_progress_bar=console.is_terminal,
        num_sanity_val_steps=0,
        gradient_clip_val=t.gradient_clip or None,
        default_root_dir=folder,
        callbacks=cbs,
    )
    pin = accelerator == "gpu"
    train_dl = loader(examples.encoded, examples.labels, examples.train_rows, cfg, True, pin)
    val_dl = loader(examples.encoded, examples.labels, examples.val_rows, cfg, False, pin)
    last = os.path.join(folder, "last.ckpt")
    resume = last if os.path.exists(last) else None
    if resume:
        log.info("resuming %s", kv(checkpoint=last))
    else:  # the starting point competes too: training must beat it (cold: the regression)
        start_loss, aurocs = validation_loss(model, val_dl)
        log.info("starting point %s", kv(val_loss=f"{start_loss:.5f}", **aurocs))
        best.offer(start_loss, -1, model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # resuming
        trainer.fit(task, train_dl, val_dl, ckpt_path=resume, weights_only=True)
    if not os.path.exists(best.weights_path):
        raise RuntimeError(f"training ended without a validated epoch ({folder})")
    model.load_state_dict(load_file(best.weights_path), strict=True)
    return {
        "accelerator": accelerator,
        "precision": precision,
        "max_epochs": epochs,
        "epochs_run": trainer.current_epoch,
        "best_epoch": best.best_epoch,
        "best_val_loss": best.best_loss,
        # per target: whether the kept logit adds the deep part (`PropensityModel.deep_on`)
        "deep_part": ({t: bool(on) for t, on in zip(model.targets, model.deep_on.tolist())}
                      if model.wide is not None else None),
        "resumed": resume is not None,
    }


def _jsonable(obj):
    """NaN/inf to None so model.json stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _champion_scores(cfg: Config, champion: str | None, examples: Examples,
                     device: str) -> tuple[np.ndarray, list[str]] | tuple[None, None]:
    """The champion's scores on the gate's rows (encoded with its own feature spec), and the
    targets it predicts."""
    if champion is None:
        return None, None
    model, _ = store.load_model(cfg, champion)
    fresh = examples.pairs[0]
    encoded = encode(fresh.table, model.spec, fresh.input_day)
    rows = examples.gate_rows - fresh.start
    return predict(model, encoded, rows, cfg.scoring.batch_size, device), list(model.targets)


@torch.no_grad()
def _init_profile_part(model: PropensityModel, examples: Examples, seed: int, cold: bool,
                       fit_wide: bool) -> dict[str, float]:
    """The profile inputs' standardisation (`PropensityModel.init_profile_part`) and, with
    `fit_wide`, the wide part fit to a seeded sample of training rows, its L2 strength per
    target chosen on (a sample of) the validation rows. Returns the chosen C per target."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(examples.train_rows)[:INIT_ROWS])
    parts = length_buckets(examples.encoded.lengths[sample], 1024)
    if cold and model.n_shares:  # a warm start keeps the prior its deep part learned with
        model.fit_item_share_prior(examples.encoded.batch(sample[p]) for p in parts)
    inputs, labels = _profile_rows(model, examples, sample)
    val_inputs = val_labels = None
    if fit_wide and model.wide is not None:
        val_rows = np.sort(rng.permutation(examples.val_rows)[:INIT_ROWS])
        val_inputs, val_labels = _profile_rows(model, examples, val_rows)
    return model.init_profile_part(inputs, labels, cold, fit_wide, val_inputs, val_labels)


def _profile_rows(model: PropensityModel, examples: Examples,
                  rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The profile inputs and labels of `rows`, in length buckets (their order)."""
    parts = length_buckets(examples.encoded.lengths[rows], 1024)
    inputs = torch.cat([model.profile_inputs(examples.encoded.batch(rows[p])) for p in parts])
    return inputs, torch.from_numpy(examples.labels[rows[np.concatenate(parts)]])


def _reference(cfg: Config, examples: Examples, scores: np.ndarray) -> dict:
    """Reference statistics for monitoring: the validation rows of every snapshot pair, each
    summarised at its own prediction time and merged, so the reference covers every weekday."""
    pair = examples.pair_of(examples.val_rows)
    parts = []
    for i, p in enumerate(examples.pairs):
        mine = pair == i
        if not mine.any():
            continue
        rows = examples.val_rows[mine] - p.start
        parts.append(stats.summarize(
            p.table.take(rows), {t: scores[mine, j] for j, t in enumerate(cfg.target_names)},
            p.input_day, cfg,
        ))
    merged = stats.merge(parts)
    merged["covers"] = sorted(p.input_day.isoformat() for p in examples.pairs)
    return merged


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to `n` for the block and restored after; 0 leaves them."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(cfg: Config, day: dt.date, cold: bool = False, callbacks=()) -> dict:
    """Run the training job for date `day` with `training.threads` torch threads; returns the
    published model.json.

    Raises GateRejected (exit 10) after publishing a rejected version; MissingInput /
    IncompletePartition (exit 3) when a histories partition is absent or incomplete;
    UsageError (exit 2) when the champion cannot be warm-started and --cold was not given;
    LeaseHeld (exit 13) when another training of the day holds the lease `train/dt=D`.
    """
    with (
        lease.acquire(cfg, "train", lease.day_key(day)) as held,
        torch_threads(cfg.training.threads),
    ):
        return _train(cfg, day, cold, callbacks, held)


def _train(cfg: Config, day: dt.date, cold: bool, callbacks, held: lease.Lease) -> dict:
    import pytorch_lightning as pl

    examples = load_examples(cfg, day)
    if not len(examples.train_rows) or not len(examples.val_rows):
        raise BadInput(
            f"histories for {examples.input_day} give {len(examples.train_rows)} training and "
            f"{len(examples.val_rows)} validation examples: too few to train"
        )
    pl.seed_everything(cfg.training.seed, verbose=False)
    model, parent, champion = _starting_point(cfg, cold)
    epochs = cfg.training.warm_epochs if parent else cfg.training.max_epochs
    folder = work_folder(cfg, day, champion, cold)
    log.info(
        "training %s",
        kv(date=day, start="warm" if parent else "cold", parent=parent, epochs=epochs, work=folder),
    )
    fixed_wide = cfg.training.wide_part == "fit" and model.wide is not None
    wide_c = _init_profile_part(model, examples, cfg.training.seed, cold=parent is None,
                                fit_wide=parent is None or fixed_wide)
    log.info("wide part %s", kv(**{f"c_{t}": c for t, c in wide_c.items()}))
    if fixed_wide:  # held at this run's regression: the rest trains on what it misses
        model.wide.requires_grad_(False)
    fitted = {**fit(cfg, examples, model, epochs, folder, callbacks), "wide_part_c": wide_c}

    device = "cuda" if fitted["accelerator"] == "gpu" else "cpu"
    targets = cfg.target_names
    scores = predict(model, examples.encoded, examples.val_rows, cfg.scoring.batch_size, device)
    gate_y = examples.labels[examples.gate_rows]
    gate_scores = scores[np.isin(examples.val_rows, examples.gate_rows)]
    cand = metrics(gate_scores, gate_y, targets)
    base_scores = baseline.fit_predict(examples, list(cfg.events.types), cfg.targets,
                                       examples.gate_rows, cfg.training.seed)
    champ_scores, champ_targets = _champion_scores(cfg, champion, examples, device)
    gate = decide(cfg.gate, gate_y, targets, gate_scores, base_scores, champ_scores,
                  champ_targets)
    gate["champion_version"] = champion

    reference = _reference(cfg, examples, scores)
    histories = cfg.uri("histories")
    meta = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": __version__,
        "training_date": day.isoformat(),
        "data": {
            **examples.summary(),
            "inputs": storage.partition(histories, examples.input_day),
            "labels": storage.partition(histories, day),
        },
        "baseline": {"method": baseline.METHOD,
                     "features": {t.name: baseline.feature_names(list(cfg.events.types), t)
                                  for t in cfg.targets},
                     "metrics": metrics(base_scores, gate_y, targets)},
        "config": cfg.model_dump(mode="json", exclude={"privacy"}),
        "model": cfg.model.model_dump(),
        "types": list(cfg.events.types),
        "targets": list(cfg.target_names),
        "architecture": model.architecture(),
        "feature_spec": model.spec.to_dict(),
        "metrics": cand,
        "gate": gate,
        "parent_version": parent,
        "warm_start": parent is not None,
        "training": fitted,
    }
    # The ONNX artefact for fast scoring; None (logged why) leaves the version eager-only.
    onnx = onnx_export.build(model, onnx_export.sample_batches(examples.encoded,
                                                               examples.train_rows))
    held.check()  # a run whose lease was taken over publishes nothing
    version = store.next_version(cfg, day)
    meta = store.publish(
        cfg, version, store.weights_bytes(model), _jsonable(meta), _jsonable(reference), onnx
    )
    if gate["decision"] == "approved":
        store.move_champion(cfg, version, "gate", None, "gate approved: " + _auc_line(gate))
    shutil.rmtree(folder, ignore_errors=True)  # the version is published: resume state is done
    log.info("gate %s", kv(version=version, decision=gate["decision"], **_flat_auc(gate)))
    _print_summary(meta)
    if gate["decision"] != "approved":
        raise GateRejected(
            f"model {version} rejected by the gate: {'; '.join(gate['reasons'])} "
            f"(champion {champion or 'none'} unchanged)"
        )
    return meta


def _print_summary(meta: dict) -> None:
    """The decision and its numbers on stdout, for people and job logs."""
    gate = meta["gate"]
    start = f"warm from {meta['parent_version']}" if meta["warm_start"] else "cold"
    lines = [
        f"model {meta['version']} ({start}, trained for {meta['training_date']}): "
        f"gate {gate['decision'].upper()}",
    ]
    deep = meta["training"].get("deep_part") or {}
    for target, m in meta["metrics"].items():
        champ = (gate["champion_auc"] or {}).get(target)
        base = (gate["baseline_auc"] or {}).get(target)
        kept = f" deep_part={'on' if deep[target] else 'off'}" if target in deep else ""
        lines.append(
            f"  {target}: auroc={_num(m['auroc'])} baseline_auroc={_num(base)} "
            f"champion_auroc={_num(champ)} average_precision={_num(m['average_precision'])} "
            f"log_loss={_num(m['log_loss'])} calibration_error={_num(m['calibration_error'])} "
            f"positives={m['positives']}/{m['examples']}{kept}"
        )
        for against, c in gate["comparisons"].get(target, {}).items():
            low, high = c["interval"]
            lines.append(f"    vs {against}: {_signed(c['difference'])} AUROC "
                         f"[{_signed(low)}, {_signed(high)}] "
                         f"({1 - gate['significance']:.0%} interval, paired DeLong)")
    lines += [f"  reason: {r}" for r in gate["reasons"]]
    before = gate["champion_version"] or "none"
    if gate["decision"] == "approved":
        lines.append(f"  champion: {before} -> {meta['version']}")
    else:
        lines.append(f"  champion: {before} (unchanged)")
    print("\n".join(lines), flush=True)


def _num(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.4f}"


def _signed(x) -> str:
    return "n/a" if x is None or x != x else f"{x:+.4f}"


def _flat_auc(gate: dict) -> dict:
    out = {f"auc_{t}": f"{a:.4f}" for t, a in gate["candidate_auc"].items() if a == a}
    for t, a in (gate["champion_auc"] or {}).items():
        if a == a:
            out[f"champion_auc_{t}"] = f"{a:.4f}"
    for t, a in (gate.get("baseline_auc") or {}).items():
        if a == a:
            out[f"baseline_auc_{t}"] = f"{a:.4f}"
    return out


def _auc_line(gate: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in _flat_auc(gate).items())
