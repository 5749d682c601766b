"""What runs the model when scoring: ONNX Runtime or eager PyTorch, and on how many cores.

`scoring.runtime`: `onnx` runs the version's `model.onnx` (exported and checked against the
eager forward at publish time, `registry.onnx_export`; its sha256 verified here) in ONNX
Runtime; `eager` runs the trainer's `PropensityModel`; `auto` (default) is onnx where the
version has the artefact and onnxruntime imports, else eager. An explicit `onnx` on a version
without the artefact, or without onnxruntime, is an error (exit 2) rather than a fallback: it
asks for a speed the run would silently not have; `auto` is the setting that falls back.

Both scorers take the same `Batch` (from the same reader thread) and return sigmoid scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from propensity.config import Config
from propensity.errors import UsageError
from propensity.model.batches import Batch, FeatureSpec
from propensity.registry import onnx_export, store
from propensity.ui import kv

log = logging.getLogger(__name__)

# How `scoring.workers: 0` spends a machine's cores, per runtime: "reader" = one process, its
# model on every core but one, which is left to its reader thread (the setting before #15);
# "threads" = one process whose model runs on every core (the reader shares them); "workers" =
# one process per core, one model thread each. Picked from bench_score's interleaved
# whole-command rows on the idle 2-core machine (docs/score.md, "Speed"): onnx 1x2 threads
# 15.5k histories/s, eager 2 workers 15.4k, against 9.3k and 10.7k for "reader".
AUTO_PLAN = {"onnx": "threads", "eager": "workers"}


class Scorer(Protocol):
    runtime: str
    spec: FeatureSpec
    targets: list[str]

    def probabilities(self, batch: Batch) -> np.ndarray:
        """Scores [B, n_targets] (float32) of one batch."""


@dataclass
class EagerScorer:
    """The trainer's own forward pass: `sigmoid(model(batch))`."""

    model: torch.nn.Module
    runtime: str = "eager"

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    @property
    def targets(self) -> list[str]:
        return list(self.model.targets)

    def probabilities(self, batch: Batch) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(self.model(batch)).numpy()


@dataclass
class OnnxScorer:
    """The version's model.onnx in an ONNX Runtime session, fed the Batch tensors it takes."""

    session: Any
    spec: FeatureSpec
    targets: list[str]
    runtime: str = "onnx"

    def __post_init__(self) -> None:
        self.inputs = onnx_export.input_names(self.session)

    def probabilities(self, batch: Batch) -> np.ndarray:
        return onnx_export.run(self.session, self.inputs, batch)


def onnxruntime_available() -> bool:
    """Whether onnxruntime imports (installed and loadable: a broken install counts as absent)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose(setting: str, meta: dict) -> str:
    """The runtime ("onnx" or "eager") `scoring.runtime` gives for a version's metadata."""
    if setting == "eager":
        return "eager"
    has_artefact = bool(meta.get("onnx"))
    available = onnxruntime_available()
    if setting == "onnx":
        if not has_artefact:
            raise UsageError(
                f"scoring.runtime=onnx, but model version {meta['version']} was published "
                f"without {store.ONNX} (its training log says why): set scoring.runtime=auto "
                "(eager for such versions) or eager"
            )
        if not available:
            raise UsageError(
                "scoring.runtime=onnx, but onnxruntime is not installed: install the `onnx` "
                "extra (pip install 'propensity[onnx]') or set scoring.runtime=auto or eager"
            )
        return "onnx"
    if has_artefact and available:
        return "onnx"
    why = "onnxruntime is not installed" if has_artefact else f"the version has no {store.ONNX}"
    log.info("scoring with eager PyTorch %s", kv(version=meta["version"], reason=repr(why)))
    return "eager"


def plan(cores: int, how: str, workers: int = 0, threads: int = 0) -> tuple[int, int]:
    """(processes, model threads per process) on `cores` cores for an AUTO_PLAN value `how`.
    `workers` 0 = as `how` says; `threads` 0 = every core for a lone process of the "threads"
    plan, else the cores left after one per process for its reader thread. The "reader" and
    "workers" plans never use more model threads than free cores: an oversubscribed intra-op
    pool collapses on a shared machine (measured under load: 1 torch thread ~5k histories/s,
    2 threads ~0.5k/s on 2 cores shared with other jobs)."""
    processes = workers or (cores if how == "workers" else 1)
    if threads:
        return processes, threads
    if how == "threads" and processes == 1:
        return 1, cores
    return processes, max(1, (cores - processes) // processes)


def scorer(cfg: Config, model: torch.nn.Module, meta: dict, runtime: str, threads: int) -> Scorer:
    """The scorer of a loaded version (`registry.load_model`) on `threads` model threads.

    Raises BadInput (exit 4) naming model.onnx when its sha256 differs from model.json."""
    torch.set_num_threads(threads)
    if runtime == "eager":
        return EagerScorer(model)
    data = store.read_onnx(cfg, meta["version"], meta)
    return OnnxScorer(onnx_export.session(data, threads), model.spec, list(model.targets))
