"""What the deep part of the model learns beyond its wide part, fast, on `bench_train.py data`.

Run (by hand, not in CI), on a folder that `bench_train.py data` made:
    .venv/bin/python benchmarks/bench_deep_part.py --dir /tmp/bc-20k --set "$T" \
        [--epochs 2] [--evals 2] [--one-cut] [--no-lstm] [--set key=value ...]

The job's own pieces (examples of every snapshot pair, the profile inputs' scaling and the wide
part fit and held as `train` does, the length-bucketed loader), then a plain AdamW loop over the
deep part instead of Lightning: no checkpoints, no early stopping, so a 20k-profile epoch takes
seconds. `--evals` times an epoch it prints one JSON line: the validation loss and, per target,
the AUROC on every pair's validation rows of `wide + alpha * deep` for alpha 0, 0.25, 0.5 and 1
(the logits of the wide part, plus a share of the deep head's). Alpha 0 is the wide part alone;
if no alpha above 0 beats it, shrinking the deep part would not help either: what it learned
does not carry to unseen profiles.

--one-cut: each epoch trains on one randomly drawn cut point (snapshot pair) per profile instead
           of all of them (about 7 times fewer rows an epoch);
--no-lstm: the head reads zeros in place of the LSTM state: an MLP on the profile inputs only;
--ema D:   also report an exponential moving average of the weights (decay D per step, torch's
           AveragedModel), the weight averaging the issue asks to try.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import config, load, the_day

ALPHAS = (0.0, 0.25, 0.5, 1.0)


@torch.no_grad()
def wide_and_deep(model, batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits of the wide part alone, of the deep head alone, and the labels, over `batches`."""
    model.eval()
    parts = [(*model.wide_and_deep(batch), y) for batch, y in batches]
    model.train()
    return tuple(torch.cat([p[i] for p in parts]).numpy() for i in range(3))


def report(tag: str, model, batches) -> None:
    from sklearn.metrics import roc_auc_score

    wide, deep, y = wide_and_deep(model, batches)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(wide + deep), torch.from_numpy(y)).item()
    row = {"at": tag, "val_loss": round(loss, 5), "load": load()}
    for j, name in enumerate(model.targets):
        row[name] = [round(float(roc_auc_score(y[:, j], wide[:, j] + a * deep[:, j])), 4)
                     for a in ALPHAS]
    print(json.dumps(row), flush=True)


def one_cut_per_profile(rows: np.ndarray, ids: np.ndarray, rng) -> np.ndarray:
    """One of `rows` per profile (`ids`: each row's profile), drawn at random among its cut
    points."""
    order = rng.permutation(len(rows))
    _, first = np.unique(ids[order], return_index=True)
    return np.sort(rows[order[first]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--evals", type=int, default=2, help="reports per epoch")
    p.add_argument("--one-cut", action="store_true")
    p.add_argument("--no-lstm", action="store_true")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY")
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    args = p.parse_args()

    from propensity.model.network import PropensityModel
    from propensity.training.examples import load_examples
    from propensity.training.lightning import loader
    from propensity.training.run import _init_profile_part

    cfg = config(args.dir, *args.set)
    t = cfg.training
    ex = load_examples(cfg, the_day(cfg))
    torch.manual_seed(t.seed)
    model = PropensityModel.from_config(cfg)
    if args.no_lstm:
        model.hidden_states = lambda x: x.new_zeros(*x.shape[:2], model.lstm.hidden_size)
    _init_profile_part(model, ex, t.seed, cold=True, fit_wide=True)
    model.wide.requires_grad_(False)  # held, as training.wide_part=fit holds it
    optimiser = torch.optim.AdamW([w for w in model.parameters() if w.requires_grad],
                                  lr=t.learning_rate, weight_decay=t.weight_decay)
    val = list(loader(ex.encoded, ex.labels, ex.val_rows, cfg, False))
    report("start", model, val)
    ema = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema),
        use_buffers=False) if args.ema else None)
    rng = np.random.default_rng(t.seed)
    ids = (np.concatenate([p.table.column("profile_id").to_numpy(zero_copy_only=False)
                           for p in ex.pairs])[ex.train_rows] if args.one_cut else None)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        rows = one_cut_per_profile(ex.train_rows, ids, rng) if args.one_cut else ex.train_rows
        batches = loader(ex.encoded, ex.labels, rows, cfg, True)
        batches.sampler.set_epoch(epoch)
        n = len(batches)
        every = max(n // args.evals, 1)
        for i, (batch, y) in enumerate(batches):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch).float(), y)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.gradient_clip or float("inf"))
            optimiser.step()
            if ema is not None:
                ema.update_parameters(model)
            if (i + 1) % every == 0 and (i + 1) // every <= args.evals:
                report(f"epoch {epoch} at {(i + 1) / n:.2f}", model, val)
                if ema is not None:
                    report(f"epoch {epoch} at {(i + 1) / n:.2f}, EMA {args.ema}", ema.module, val)
    print(json.dumps({"seconds": round(time.perf_counter() - started), "rows_per_epoch": len(rows),
                      "validation_rows": len(ex.val_rows)}), flush=True)


if __name__ == "__main__":
    main()
