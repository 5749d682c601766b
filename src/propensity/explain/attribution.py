"""Which events moved a prediction: running predictions and per-event attributions.

Two methods, both on the probability of one target (not the logit), so contributions read in
the unit people see:

- Integrated gradients (Sundararajan et al. 2017) on the per-event input vectors of
  `PropensityModel.embed`: the straight path from a baseline to the history's own vectors,
  integrated with the trapezoid rule. Baseline: every event's vector set to zero (the same
  number of steps and the same prediction-time context, i.e. "this many events that carry no
  information"). An event's contribution is the sum of its features' attributions. The method
  promises completeness: contributions sum to f(x) - f(baseline); we measure the gap and refine
  the integral (more steps) until it is within `tolerance`.
- Leave-one-out: f(history) - f(history without the event), re-encoded from the stored events,
  so the next event's time gap and the time since the last event change as they would have.
  No completeness promise (interactions are not split), but it is model-agnostic and exact.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import torch

from propensity.training.batches import LIST_COLUMNS, Batch, FeatureSpec, encode

IG_STEPS = 64  # trapezoid intervals of the first integration; doubled while the gap is too large
IG_MAX_STEPS = 1024
IG_TOLERANCE = 0.005  # max |sum of contributions - (f(x) - f(baseline))|, in probability
_CHUNK_STEPS = 1 << 17  # interpolated sequence steps per forward/backward pass (bounds memory)
BASELINE = "zero input vector for every event (same length, same prediction-time context)"


@dataclass
class Attribution:
    """Integrated-gradients result for B histories (arrays over the batch's padded steps)."""

    prediction: np.ndarray  # [B] f(x): probability of the target
    baseline: np.ndarray  # [B] f(baseline)
    features: np.ndarray  # [B, T, F] attribution per input feature (0 at padding)
    steps: int  # trapezoid intervals used

    @property
    def contributions(self) -> np.ndarray:
        """[B, T] per-event contribution: the sum over the event's features."""
        return self.features.sum(-1)

    @property
    def gap(self) -> np.ndarray:
        """[B] completeness gap |sum of contributions - (f(x) - f(baseline))|."""
        total = self.contributions.sum(-1)
        return np.abs(total - (self.prediction - self.baseline))


def repeat(batch: Batch, k: int) -> Batch:
    """The batch repeated k times along the batch dimension (copy i of row b at i*B + b)."""
    return Batch(**{f.name: torch.cat([getattr(batch, f.name)] * k) for f in fields(batch)})


def running_probabilities(model, batch: Batch, target: int) -> np.ndarray:
    """[B, T] probability of the target after each event (padding steps are meaningless)."""
    with torch.no_grad():
        return torch.sigmoid(model.running_logits(batch)[..., target]).numpy()


def _trapezoid(model, x: torch.Tensor, batch: Batch, target: int, alphas: np.ndarray,
               weights: np.ndarray) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """sum_i weights[i] * grad f(alphas[i] * x) over the alphas, and f at each alpha."""
    n, t, f = x.shape
    per_pass = max(1, _CHUNK_STEPS // max(n * t, 1))
    total = torch.zeros_like(x, dtype=torch.float64)  # many small terms: sum in double
    values = {}
    for start in range(0, len(alphas), per_pass):
        a = torch.tensor(alphas[start : start + per_pass], dtype=x.dtype)
        w = torch.tensor(weights[start : start + per_pass], dtype=x.dtype)
        k = len(a)
        path = (a.view(k, 1, 1, 1) * x.unsqueeze(0)).reshape(k * n, t, f).requires_grad_(True)
        with torch.enable_grad():
            out = torch.sigmoid(model.forward_from_embedded(path, repeat(batch, k))[:, target])
            (grad,) = torch.autograd.grad(out.sum(), path)
        total += (w.view(k, 1, 1, 1) * grad.view(k, n, t, f)).sum(0, dtype=torch.float64)
        for i, alpha in enumerate(alphas[start : start + per_pass]):
            values[float(alpha)] = out.detach().view(k, n)[i]
    return total, values


def integrated_gradients(
    model,
    batch: Batch,
    target: int,
    steps: int = IG_STEPS,
    tolerance: float = IG_TOLERANCE,
    max_steps: int = IG_MAX_STEPS,
) -> Attribution:
    """Integrated gradients of the target's probability w.r.t. the per-event input vectors,
    from the zero baseline; `steps` doubles (reusing earlier points) until every history's
    completeness gap is within `tolerance` or `max_steps` is reached."""
    model.eval()
    with torch.no_grad():
        x = model.embed(batch)
    # Padding steps stay zero on the whole path (they never reach the output anyway).
    pad = torch.arange(x.shape[1]).unsqueeze(0) >= batch.lengths.unsqueeze(1)
    x = x.masked_fill(pad.unsqueeze(-1), 0.0)
    # Trapezoid sums on a grid of `steps` intervals; doubling only evaluates the new midpoints.
    alphas = np.linspace(0.0, 1.0, steps + 1)
    weights = np.full(steps + 1, 1.0)
    weights[[0, -1]] = 0.5
    grads, values = _trapezoid(model, x, batch, target, alphas, weights)
    total = grads  # sum of weighted gradients on the current grid, before dividing by steps
    while True:
        features = (x.double() * total / steps).numpy()
        result = Attribution(
            prediction=values[1.0].numpy(),
            baseline=values[0.0].numpy(),
            features=features,
            steps=steps,
        )
        if result.gap.max(initial=0.0) <= tolerance or steps * 2 > max_steps:
            return result
        mids = (np.arange(steps) + 0.5) / steps
        extra, _ = _trapezoid(model, x, batch, target, mids, np.ones(steps))
        total = total + extra
        steps *= 2


def leave_one_out(model, history: pa.Table, spec: FeatureSpec, as_of: dt.date,
                  target: int) -> tuple[float, np.ndarray]:
    """(f(history), [T] f(history) - f(history without event i)) for a one-row histories table."""
    row = history.select(LIST_COLUMNS).to_pylist()[0]
    n = len(row["ts"])
    variants = {c: [row[c]] + [row[c][:i] + row[c][i + 1 :] for i in range(n)] for c in row}
    table = pa.table(variants, schema=history.select(LIST_COLUMNS).schema)
    encoded = encode(table, spec, as_of, source="leave-one-out variants")
    batch = encoded.batch(np.arange(len(encoded)))
    with torch.no_grad():
        probs = torch.sigmoid(model(batch)[:, target]).numpy()
    return float(probs[0]), probs[0] - probs[1:]
