"""An auxiliary loss over the earlier cut points of every training history.

The main loss has one label per (profile, snapshot pair): a few thousand positives for tens of
thousands of histories, so the LSTM learns the training profiles rather than what predicts
(validation loss rises from the second epoch; docs/train.md, "Quality"). But a history already
holds the answer to the same question asked after each of its own events: did one of the
target's events follow within the target's horizon? Asked at every step whose horizon ends
before the prediction time (fully observed: the list keeps every event after an event it
keeps), that gives every history dozens of labels, and it asks the LSTM's state after each
event for exactly what the main head needs from its final state.

`StepTargets` turns a batch into those labels; the task adds a linear head on every hidden state
and `training.aux_loss_weight` times their mean binary cross-entropy to the loss. The head is
training-only (it lives in the Lightning task, not the model): published weights, scoring and
the ONNX graph do not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from propensity.config import TargetConfig
from propensity.model.batches import Batch, FeatureSpec
from propensity.model.network import age_hours

_HOURS_PER_DAY = 24.0


class StepTargets:
    """Per-step labels of the targets from a batch's own events."""

    def __init__(self, targets: Sequence[TargetConfig], spec: FeatureSpec):
        items = [p.target for p in spec.items]
        self.horizons = torch.tensor([t.horizon_days * _HOURS_PER_DAY for t in targets])
        # Per target: which type codes count, and the column of its item flags (-1: any item).
        self.types = torch.zeros(len(targets), len(spec.types), dtype=torch.bool)
        for j, target in enumerate(targets):
            for name in target.event_types:
                self.types[j, spec.types.index(name)] = True
        self.item_column = [items.index(t.name) if t.on_items else -1 for t in targets]

    def positives(self, batch: Batch) -> torch.Tensor:
        """Whether each event is one of each target's events [B, T, J] (padding: False)."""
        is_type = self.types.to(batch.event_type.device)[:, batch.event_type]  # [J, B, T]
        out = is_type.permute(1, 2, 0).clone()
        for j, column in enumerate(self.item_column):
            if column >= 0:
                out[..., j] &= batch.item_match[..., column] > 0
        steps = torch.arange(batch.event_type.shape[1], device=out.device)
        real = steps[None, :] < batch.lengths.to(out.device)[:, None]
        return out & real[..., None]

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, observed), both [B, T, J]: label[b, t, j] = a later event s > t of the
        history is one of target j's within its horizon after event t; observed = step t is
        real and its horizon ends by the prediction time, so the history shows the whole window.
        The pairwise form is O(T^2) per history: T is at most `histories.max_events` (200),
        a 200 x 200 matrix per history, small beside the LSTM's own work."""
        age = age_hours(batch).float()  # [B, T] hours to the prediction time, falling along T
        horizons = self.horizons.to(age.device)
        T = age.shape[1]
        after = torch.ones(T, T, dtype=torch.bool, device=age.device).triu(diagonal=1)  # s > t
        gap = age[:, :, None] - age[:, None, :]  # [B, t, s]: hours from event t to event s
        positive = self.positives(batch).to(age.device)  # [B, T(s), J]
        labels, observed = [], []
        steps = torch.arange(T, device=age.device)
        real = steps[None, :] < batch.lengths.to(age.device)[:, None]
        for j in range(len(self.item_column)):
            soon = after & (gap <= horizons[j]) & positive[:, None, :, j]
            labels.append(soon.any(dim=-1))
            observed.append(real & (age >= horizons[j]))
        return torch.stack(labels, dim=-1).float(), torch.stack(observed, dim=-1)


def step_loss(logits: torch.Tensor, labels: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the observed steps (0 when none is)."""
    if not observed.any():
        return logits.sum() * 0.0
    return torch.nn.functional.binary_cross_entropy_with_logits(
        logits[observed].float(), labels[observed]
    )
