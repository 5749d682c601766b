"""Lightning pieces of training: the task, length-bucketed data loaders and callbacks.

Resumability: every epoch ends with a Lightning checkpoint `last.ckpt` in the run's local work
folder (transient resume state only: it is torch-pickled, loaded with `weights_only=True`, and
never published). Epoch shuffles are seeded from (seed, epoch) and dropout from (seed, epoch,
step), so a run resumed from epoch k's checkpoint continues exactly as the uninterrupted run would.
The best weights by validation loss are kept beside it as safetensors.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from propensity.config import Config
from propensity.model.batches import EncodedHistories, length_buckets
from propensity.registry.store import weights_bytes
from propensity.ui import kv

log = logging.getLogger(__name__)


def _identity(x):
    return x


class BucketedBatches(Dataset):
    """Map-style dataset whose index is an array of rows: item = (Batch, labels [B, n_targets])."""

    def __init__(self, encoded: EncodedHistories, labels: np.ndarray):
        self.encoded = encoded
        self.labels = labels

    def __getitem__(self, rows: np.ndarray):
        return self.encoded.batch(rows), torch.from_numpy(self.labels[rows])

    def __len__(self) -> int:
        return len(self.encoded)


class BucketSampler(Sampler):
    """Yields arrays of rows, grouped by history length; reshuffled per epoch when training."""

    def __init__(self, lengths, rows, batch_size, shuffle, seed, window):
        self.lengths, self.rows = lengths, rows
        self.batch_size, self.shuffle, self.seed, self.window = batch_size, shuffle, seed, window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (also when resuming)."""
        self.epoch = epoch

    def __iter__(self):
        parts = length_buckets(
            self.lengths[self.rows],
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed * 100_003 + self.epoch,
            window=self.window,
        )
        for part in parts:
            yield self.rows[part]

    def __len__(self) -> int:
        n, span = len(self.rows), self.batch_size * self.window
        if not self.shuffle:
            return math.ceil(n / self.batch_size)
        return sum(math.ceil(min(span, n - s) / self.batch_size) for s in range(0, n, span))


def loader(encoded, labels, rows, cfg: Config, shuffle: bool, pin_memory: bool = False) -> DataLoader:
    """A DataLoader of length-bucketed (Batch, labels) pairs over `rows`; batches are built
    lazily, one at a time, from the flat encoded arrays."""
    t = cfg.training
    sampler = BucketSampler(encoded.lengths, rows, t.batch_size, shuffle, t.seed, t.bucket_window)
    return DataLoader(
        BucketedBatches(encoded, labels),
        sampler=sampler,
        batch_size=None,
        collate_fn=_identity,
        num_workers=t.num_workers,
        pin_memory=pin_memory,
        persistent_workers=t.num_workers > 0,
    )


class PropensityTask(pl.LightningModule):
    """Trains a PropensityModel with binary cross-entropy on every target."""

    def __init__(self, model, learning_rate: float, weight_decay: float, seed: int):
        super().__init__()
        self.model = model
        self.learning_rate, self.weight_decay, self.seed = learning_rate, weight_decay, seed
        self._train_loss = None
        self._train_n = 0
        self._val = []

    def forward(self, batch):
        return self.model(batch)

    def on_train_epoch_start(self) -> None:
        self._train_loss, self._train_n = torch.zeros((), device=self.device), 0

    def on_train_batch_start(self, pair, batch_idx) -> None:
        # Dropout draws depend only on (seed, epoch, step), never on what else consumed random
        # numbers before: a resumed run repeats them exactly.
        torch.manual_seed((self.seed * 100_003 + self.current_epoch) * 1_000_003 + batch_idx)

    def training_step(self, pair, batch_idx):
        batch, y = pair
        wide, deep = self.model.wide_and_deep(batch)  # every target's deep part, gated or not
        logits = wide + deep
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        self._train_loss += loss.detach() * len(y)  # no .item(): avoids a device sync per step
        self._train_n += len(y)
        return loss

    def validation_step(self, pair, batch_idx):
        batch, y = pair
        wide, deep = self.model.wide_and_deep(batch)
        self._val.append((wide.float().detach(), deep.float().detach(), y))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        wide, deep, y = (torch.cat(part) for part in zip(*self._val))
        self._val = []
        loss, logits = gated_loss(self.model, wide, deep, y)
        self.log("val_loss", loss, prog_bar=True)
        fields = {"epoch": self.current_epoch, "val_loss": f"{loss.item():.5f}"}
        if self._train_n:
            fields["train_loss"] = f"{(self._train_loss / self._train_n).item():.5f}"
        log.info("epoch %s", kv(**fields, **_aurocs(logits, y, self.model.targets),
                                **deep_part(self.model, wide + deep, y)))

    def configure_optimizers(self):
        trained = [p for p in self.model.parameters() if p.requires_grad]  # not a fixed wide part
        return torch.optim.AdamW(trained, lr=self.learning_rate, weight_decay=self.weight_decay)


class BestWeights(pl.Callback):
    """Keeps the weights with the lowest validation loss as `best.safetensors` (+ `best.json`)
    in the work folder; its best score travels in Lightning's checkpoint for resumes."""

    def __init__(self, folder: str):
        self.folder = folder
        self.best_loss = math.inf
        self.best_epoch = -1

    @property
    def weights_path(self) -> str:
        return os.path.join(self.folder, "best.safetensors")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None:
            self.offer(float(loss), trainer.current_epoch, pl_module.model)

    def offer(self, loss: float, epoch: int, model: torch.nn.Module) -> None:
        """Keep `model`'s weights if `loss` is the lowest so far (epoch -1: before training)."""
        if not loss < self.best_loss:
            return
        self.best_loss, self.best_epoch = loss, epoch
        _atomic_write(self.weights_path, weights_bytes(model))
        info = {"val_loss": self.best_loss, "epoch": self.best_epoch}
        _atomic_write(os.path.join(self.folder, "best.json"), json.dumps(info).encode())

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss, self.best_epoch = state["best_loss"], state["best_epoch"]


@torch.no_grad()
def gated_loss(model, wide: torch.Tensor, deep: torch.Tensor, y: torch.Tensor):
    """Validation loss (mean binary cross-entropy) of the logits [N, n_targets] `wide` +
    `deep`, with each target's deep part kept only where it lowers that target's loss; sets
    `model.deep_on` to that choice and returns (loss, the chosen logits). Chosen per target, as
    one target's deep part can generalise where another's only fits the training profiles (on
    the planted stream both happen in one run: docs/train.md, "Quality"). A model without a
    wide part has nothing to fall back on: its deep part stays on."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    on = bce(wide + deep, y, reduction="none").mean(dim=0)
    if model.wide is None:
        return on.mean(), wide + deep
    off = bce(wide, y, reduction="none").mean(dim=0)
    gate = (on < off).to(model.deep_on.dtype)
    model.deep_on.copy_(gate.to(model.deep_on.device))
    return torch.minimum(on, off).mean(), wide + deep * gate.to(deep.dtype)


def deep_part(model, ungated: torch.Tensor, y: torch.Tensor) -> dict[str, str]:
    """For the log: `deep_<target>=on|off`, whether the target's logit adds the deep part, and
    where it does not, the AUROC it would have had with it (`ungated` = wide + deep)."""
    if model.wide is None:
        return {}
    out = {}
    with_deep = _aurocs(ungated, y, model.targets)
    for name, on in zip(model.targets, model.deep_on.tolist()):
        out[f"deep_{name}"] = "on" if on else "off"
        if not on and f"val_auroc_{name}" in with_deep:
            out[f"val_auroc_{name}_with_deep"] = with_deep[f"val_auroc_{name}"]
    return out


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batches) -> tuple[float, dict[str, str]]:
    """`gated_loss` of `model` over (batch, labels) pairs, on the CPU (setting its `deep_on`),
    and the AUROC per target and the deep parts kept, as the epochs log them."""
    model.eval()
    parts = [(*model.wide_and_deep(batch), y) for batch, y in batches]
    model.train()
    if not parts:
        return math.inf, {}
    wide, deep, y = (torch.cat([p[i].float() for p in parts]) for i in range(3))
    loss, logits = gated_loss(model, wide, deep, y)
    return float(loss), {**_aurocs(logits, y, model.targets), **deep_part(model, wide + deep, y)}


def _aurocs(logits: torch.Tensor, y: torch.Tensor, targets: list[str]) -> dict[str, str]:
    """`val_auroc_<target>` per target with both classes among the rows (for the log)."""
    from torchmetrics.functional.classification import binary_auroc

    out = {}
    for j, name in enumerate(targets):
        t = y[:, j].long()
        if 0 < int(t.sum()) < len(t):
            out[f"val_auroc_{name}"] = f"{binary_auroc(logits[:, j], t).item():.4f}"
    return out


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
