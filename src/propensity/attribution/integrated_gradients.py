"""Which events moved a prediction: running predictions and per-event attributions.

Two methods, both on the probability of one target (not the logit), so contributions read in
the unit people see:

- Integrated gradients (Sundararajan et al. 2017) on the per-event input vectors of
  `PropensityModel.embed`: the straight path from a baseline to the history's own vectors,
  integrated with the trapezoid rule on a grid refined where it is needed. Baseline: every event's vector set to zero (the same
  number of steps and the same prediction-time context, i.e. "this many events that carry no
  information"). An event's contribution is the sum of its features' attributions. The method
  promises completeness: contributions sum to f(x) - f(baseline); we measure the gap and refine
  the grid where the gap comes from until it is within `tolerance`. Where the output jumps
  along the path (an abrupt switch of the LSTM's state) no gradient samples capture the jump:
  the gap stays, is reported, and leave-one-out is the method to read for that history.
- Counters (profile-level features): integrated gradients of the same probability w.r.t. the
  histories' counter features of the context (`counter_attributions`), from a baseline with them
  at zero and the events as they are. They reach the output only through the head, which is
  smooth and cheap, so a fixed grid suffices; its completeness gap is reported the same way.
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

from propensity.errors import UsageError
from propensity.model.batches import ENCODED_LIST_COLUMNS, Batch, FeatureSpec, encode

IG_STEPS = 64  # trapezoid intervals of the first grid; refined where the gap comes from
IG_MAX_STEPS = 256  # most intervals of a refined grid
_MIN_WIDTH = 1e-4  # narrowest interval that is refined further
_SPLIT = 8  # a refined interval becomes this many
IG_TOLERANCE = 0.005  # max |sum of contributions - (f(x) - f(baseline))|, in probability
_CHUNK_STEPS = 1 << 17  # interpolated sequence steps per forward/backward pass (bounds memory)
BASELINE = "zero input vector for every event (same length, same prediction-time context)"


def resolve_target(model, target: str | None) -> tuple[str, int]:
    """The target's name and output index (default: the model's first target)."""
    if target is None:
        return model.targets[0], 0
    if target not in model.targets:
        raise UsageError(f"--target {target!r}: the model predicts {', '.join(model.targets)}")
    return target, model.targets.index(target)


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


def _path(model, x: torch.Tensor, batch: Batch, target: int, alphas: np.ndarray):
    """Along the path alpha * x, per alpha: f and df/dalpha = grad f . x per history ([k, n]
    float64 each) and grad f itself ([k, n, t, f] float32)."""
    n, t, f = x.shape
    per_pass = max(1, _CHUNK_STEPS // max(n * t, 1))
    values, slopes, grads = [], [], []
    for start in range(0, len(alphas), per_pass):
        a = torch.tensor(alphas[start : start + per_pass], dtype=x.dtype)
        k = len(a)
        path = (a.view(k, 1, 1, 1) * x.unsqueeze(0)).reshape(k * n, t, f).requires_grad_(True)
        with torch.enable_grad():
            out = torch.sigmoid(model.forward_from_embedded(path, repeat(batch, k))[:, target])
            (grad,) = torch.autograd.grad(out.sum(), path)
        grad = grad.view(k, n, t, f)
        values.append(out.detach().view(k, n).double())
        slopes.append((grad.double() * x.double().unsqueeze(0)).sum((2, 3)))
        grads.append(grad)
    return torch.cat(values).numpy(), torch.cat(slopes).numpy(), torch.cat(grads)


def _weights(alphas: np.ndarray) -> np.ndarray:
    """Trapezoid weights of a sorted grid on [0, 1]."""
    h = np.diff(alphas)
    w = np.zeros(len(alphas))
    w[:-1] += h / 2
    w[1:] += h / 2
    return w


def integrated_gradients(
    model,
    batch: Batch,
    target: int,
    steps: int = IG_STEPS,
    tolerance: float = IG_TOLERANCE,
    max_steps: int = IG_MAX_STEPS,
) -> Attribution:
    """Integrated gradients of the target's probability w.r.t. the per-event input vectors,
    from the zero baseline, by the trapezoid rule on an adaptive grid.

    Completeness fails exactly by the sum over grid intervals of (trapezoid estimate of the
    interval's change) - (its true change f(b) - f(a)), both known per interval from f and
    df/dalpha at its ends. Starting from `steps` even intervals, the intervals with the largest
    error are split until every history's gap is within `tolerance` or the grid holds
    `max_steps` intervals; the gradients of every grid point are kept, so the attributions
    cost no extra pass."""
    model.eval()
    with torch.no_grad():
        x = model.embed(batch)
    # Padding steps stay zero on the whole path (they never reach the output anyway).
    pad = torch.arange(x.shape[1]).unsqueeze(0) >= batch.lengths.unsqueeze(1)
    x = x.masked_fill(pad.unsqueeze(-1), 0.0)

    alphas = np.linspace(0.0, 1.0, steps + 1)
    values, slopes, grads = _path(model, x, batch, target, alphas)
    while True:
        h = np.diff(alphas)[:, None]
        error = h * (slopes[:-1] + slopes[1:]) / 2 - np.diff(values, axis=0)  # [intervals, n]
        if np.abs(error.sum(0)).max(initial=0.0) <= tolerance or len(h) >= max_steps:
            break
        # Refine the intervals with the largest errors (within a tenth of the worst): a steep
        # transition of the LSTM's state along the path is resolved by a few rounds of local
        # refinement instead of a grid that is fine everywhere. Intervals narrower than
        # _MIN_WIDTH are left alone: the output jumps there, which no gradient samples
        # capture, and the gap is reported instead.
        worst = np.where(h[:, 0] > _MIN_WIDTH, np.abs(error).max(1), 0.0)
        if worst.max() <= 0:
            break
        chosen = np.flatnonzero(worst >= 0.1 * worst.max())
        chosen = chosen[np.argsort(-worst[chosen])][: max(1, (max_steps - len(h)) // (_SPLIT - 1))]
        # Each pass costs about the same however few points it has (the LSTM runs step by
        # step), so split the chosen intervals in _SPLIT at once rather than halving them.
        fractions = np.arange(1, _SPLIT) / _SPLIT
        mids = (alphas[chosen, None] + np.diff(alphas)[chosen, None] * fractions).ravel()
        mid_values, mid_slopes, mid_grads = _path(model, x, batch, target, mids)
        order = np.argsort(np.concatenate([alphas, mids]), kind="stable")
        alphas = np.concatenate([alphas, mids])[order]
        values = np.concatenate([values, mid_values])[order]
        slopes = np.concatenate([slopes, mid_slopes])[order]
        grads = torch.cat([grads, mid_grads])[torch.from_numpy(order)]
    # Many small terms: accumulate in double.
    w = torch.from_numpy(_weights(alphas)).view(-1, 1, 1, 1)
    total = (w * grads.double()).sum(0)
    return Attribution(
        prediction=values[-1],
        baseline=values[0],
        features=(x.double() * total).numpy(),
        steps=len(alphas) - 1,
    )


@dataclass
class CounterAttribution:
    """Integrated gradients over the counter features for B histories."""

    names: list[str]  # the counter features, as in FeatureSpec.context_features
    features: np.ndarray  # [B, len(names)] attribution per counter feature
    prediction: np.ndarray  # [B] f(events, counters)
    baseline: np.ndarray  # [B] f(events, counters at zero)

    @property
    def gap(self) -> np.ndarray:
        """[B] |sum of attributions - (f(x) - f(baseline))|."""
        return np.abs(self.features.sum(-1) - (self.prediction - self.baseline))


def counter_attributions(
    model, batch: Batch, target: int, steps: int = IG_STEPS
) -> CounterAttribution:
    """Integrated gradients of the target's probability w.r.t. the counter features (empty
    when the model reads none), by the trapezoid rule on `steps` even intervals."""
    model.eval()
    names = model.spec.context_features
    start = names.index("counters_unknown") if model.spec.counters else len(names)
    with torch.no_grad():
        final, counts = model.sequence_part(model.embed(batch), batch)
    context = batch.context.float()
    n, k = context.shape[0], steps + 1
    part = torch.zeros_like(context)
    part[:, start:] = context[:, start:]
    alphas = torch.linspace(0.0, 1.0, k).view(k, 1, 1)
    path = ((context - part).unsqueeze(0) + alphas * part.unsqueeze(0)).reshape(k * n, -1)
    path.requires_grad_(True)
    with torch.enable_grad():
        out = torch.sigmoid(
            model.logits_from(final.repeat(k, 1), path, counts.repeat(k, 1))[:, target]
        )
        (grad,) = torch.autograd.grad(out.sum(), path)
    w = torch.from_numpy(_weights(np.linspace(0.0, 1.0, k))).view(k, 1, 1)
    total = (w * grad.view(k, n, -1).double()).sum(0)
    values = out.detach().view(k, n).double().numpy()
    return CounterAttribution(
        names=names[start:],
        features=(part.double() * total).numpy()[:, start:],
        prediction=values[-1],
        baseline=values[0],
    )


def leave_one_out(model, history: pa.Table, spec: FeatureSpec, as_of: dt.date,
                  target: int) -> tuple[float, np.ndarray]:
    """(f(history), [T] f(history) - f(history without event i)) for a one-row histories table."""
    row = history.select(ENCODED_LIST_COLUMNS).to_pylist()[0]
    n = len(row["ts"])
    variants = {c: [row[c]] + [row[c][:i] + row[c][i + 1 :] for i in range(n)] for c in row}
    table = pa.table(variants, schema=history.select(ENCODED_LIST_COLUMNS).schema)
    encoded = encode(table, spec, as_of, source="leave-one-out variants")
    batch = encoded.batch(np.arange(len(encoded)))
    with torch.no_grad():
        probs = torch.sigmoid(model(batch)[:, target]).numpy()
    return float(probs[0]), probs[0] - probs[1:]
