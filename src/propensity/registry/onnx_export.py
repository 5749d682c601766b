"""The ONNX artefact of a model version (`model.onnx`), built at publish time for fast scoring.

The version's own `PropensityModel`, its forward pass followed by the sigmoid, traced by
`torch.onnx.export` (opset 17, batch and step axes dynamic), so ONNX Runtime returns the scores
directly. Its inputs are the `Batch` tensors the model reads (all but `rows`; `item_match` may
have a zero-size last axis, `context` is as wide as the feature spec makes it); the names the
exported graph keeps are recorded, and scoring feeds exactly those.

An artefact is written only when its scores equal the eager forward pass on a sample of the
training rows within `TOLERANCE` (measured with ONNX Runtime at export, recorded as
`max_abs_diff`); otherwise, or when export fails, the version is published without it and
scoring uses eager PyTorch (`scoring.runtime: auto`). Training never fails for it.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from dataclasses import fields

import numpy as np
import torch

from propensity.model.batches import Batch, EncodedHistories, length_buckets
from propensity.ui import kv

log = logging.getLogger(__name__)

OPSET = 17
# Largest |ONNX - eager| score accepted at export. Measured differences are 1e-7 to 3e-7 (float32
# rounding of other kernel orders), random and trained models alike since the ages are float64
# (`network.age_hours`); 1e-5 leaves room for that and nothing more: 0.1% on one weight tensor
# gives 4e-5 and more (tests/test_score_onnx_edges.py).
TOLERANCE = 1e-5
OUTPUT = "scores"
INPUTS = tuple(f.name for f in fields(Batch) if f.name != "rows")
SAMPLE_ROWS = 2048  # training rows the export is checked on
SAMPLE_BATCH = 256  # their batch size: several batches of different lengths and widths


class _Scores(torch.nn.Module):
    """The model as ONNX sees it: positional Batch tensors in, sigmoid scores out."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        named = dict(zip(INPUTS, tensors))
        # `rows` only joins scores back to profile ids; the forward pass never reads it.
        return torch.sigmoid(self.model(Batch(**named, rows=named["lengths"])))


def _expm1(g, x):
    """ONNX has no expm1 at opset 17: exp(x) - 1 in the exported graph only, in x's own type
    (the model takes it in float64, `network.age_hours`, where the digits it loses for |x| near
    0 are ~1e-16 of an hour)."""
    one = g.op("CastLike", g.op("Constant", value_t=torch.tensor(1.0)), x)
    return g.op("Sub", g.op("Exp", x), one)


def export_bytes(model: torch.nn.Module, example: Batch) -> bytes:
    """The ONNX graph of `model` (CPU, eval mode) traced on `example`, serialised."""
    axes = {name: {0: "batch", 1: "steps"} for name in INPUTS if name not in ("lengths", "context")}
    axes |= {"lengths": {0: "batch"}, "context": {0: "batch"}}
    buf = io.BytesIO()
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1, OPSET)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shapes: checked below instead
            torch.onnx.export(
                _Scores(model).eval(),
                tuple(getattr(example, n) for n in INPUTS),
                buf,
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::expm1", OPSET)
    return buf.getvalue()


def session(data: bytes, threads: int):
    """An ONNX Runtime session (CPU) of a serialised graph with `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one graph node at a time: the LSTM is sequential anyway
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: its warnings about unused shapes are noise
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def input_names(sess) -> list[str]:
    """The Batch fields a session's graph takes (the exporter drops inputs it does not use)."""
    return [i.name for i in sess.get_inputs()]


def run(sess, names: list[str], batch: Batch) -> np.ndarray:
    """Scores [B, n_targets] (float32) of one batch."""
    return sess.run([OUTPUT], {n: getattr(batch, n).numpy() for n in names})[0]


def max_abs_diff(model: torch.nn.Module, sess, batches: list[Batch]) -> float:
    """Largest |ONNX - eager| score over `batches`."""
    names = input_names(sess)
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            eager = torch.sigmoid(model(batch)).numpy()
            worst = max(worst, float(np.abs(run(sess, names, batch) - eager).max()))
    return worst


def sample_batches(encoded: EncodedHistories, rows: np.ndarray, seed: int = 0) -> list[Batch]:
    """Length-bucketed batches of up to SAMPLE_ROWS of `rows` (a seeded sample): short and long
    histories, several batch widths, so the dynamic axes are checked, not only the traced one."""
    rng = np.random.default_rng(seed)
    rows = np.asarray(rows)
    if len(rows) > SAMPLE_ROWS:
        rows = rng.choice(rows, SAMPLE_ROWS, replace=False)
    return [encoded.batch(rows[g]) for g in length_buckets(encoded.lengths[rows], SAMPLE_BATCH)]


def build(
    model: torch.nn.Module, batches: list[Batch], tolerance: float = TOLERANCE
) -> tuple[bytes, dict] | None:
    """The artefact and its record ({"opset", "max_abs_diff", "inputs"}), or None, with the
    reason logged, when it cannot be made or its scores differ from eager beyond `tolerance`."""
    if not batches:
        log.warning("no ONNX model: no rows to check an export on; scoring will use eager")
        return None
    try:
        import onnxruntime  # noqa: F401 - without it the export cannot be checked
    except ImportError:
        log.warning(
            "no ONNX model: onnxruntime is not installed (the `onnx` extra); "
            "scoring will use eager PyTorch"
        )
        return None
    # Traced on the widest batch: a batch of one row or one step could fix an axis to 1.
    example = max(batches, key=lambda b: b.event_type.numel())
    try:
        cpu = copy.deepcopy(model).to("cpu").float().eval()  # the trained model stays as it is
        data = export_bytes(cpu, example)
        sess = session(data, threads=torch.get_num_threads())
        diff = max_abs_diff(cpu, sess, batches)
        names = input_names(sess)
    except Exception as e:  # noqa: BLE001 - any failure of the optional artefact: publish without
        log.warning(
            "no ONNX model: export failed %s",
            kv(error=type(e).__name__, message=str(e).splitlines()[0] if str(e) else ""),
        )
        return None
    if not diff <= tolerance:  # also refuses NaN
        log.warning(
            "no ONNX model: its scores differ from eager %s",
            kv(max_abs_diff=f"{diff:.2e}", tolerance=tolerance),
        )
        return None
    return data, {"opset": OPSET, "max_abs_diff": diff, "inputs": names}
