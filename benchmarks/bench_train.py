"""Quality and speed of `propensity train` on generated data with a known truth.

Run (by hand, not in CI):
    .venv/bin/python benchmarks/bench_train.py data --dir /tmp/bench-train --profiles 200000 \
        --days 35
    .venv/bin/python benchmarks/bench_train.py quality --dir /tmp/bench-train
    .venv/bin/python benchmarks/bench_train.py speed   --dir /tmp/bench-train [--rows 30000]

data:    `propensity generate` (Parquet) then `propensity aggregate --full` for D-7 and D, with D
         the last generated day.
quality: trains with the real job (cold), then on the same validation profiles reports the AUC
         of the model, of the generator's true probabilities `p_order_7d` of day D-7 (the best
         possible; joined through the pseudonymised ids) and of a logistic regression on
         hand-made count/recency features (scikit-learn), all against the realised labels.
speed:   histories/s of one training epoch for (a) the real trainer (Lightning, batches built
         lazily from the Arrow-encoded arrays), (b) a bare PyTorch loop over the same model
         with the same length-bucketed batches pre-built as tensors, (c) the bare loop with
         every history padded to the longest (the naive baseline). Interleaved, best of
         `--repeats`, in one process, so the ratios hold on a busy machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time

import numpy as np

START = dt.date(2026, 1, 5)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(folder: str, *extra: str):
    from propensity.config import load_config

    return load_config(
        overrides=[f"storage.root={folder}/data", f"training.work_dir={folder}/work", *extra]
    )


def the_day(cfg) -> dt.date:
    from propensity import storage

    days = storage.list_partitions(cfg.uri("histories"))
    if len(days) < 2:
        sys.exit("no histories: run the `data` step first")
    return days[-1]


def data(args) -> None:
    from propensity.events.generate import generate_stream

    cfg = config(args.dir)
    t = time.perf_counter()
    generate_stream(cfg.uri("events"), START, args.days, args.profiles, seed=1, fmt="parquet")
    print(f"generate: {time.perf_counter() - t:.0f} s", flush=True)
    last = START + dt.timedelta(days=args.days - 1)
    exe = os.path.join(ROOT, ".venv", "bin", "propensity")
    for day in (last - dt.timedelta(days=cfg.horizon_days), last):
        t = time.perf_counter()
        subprocess.run(
            [
                exe,
                "aggregate",
                "--date",
                day.isoformat(),
                "--full",
                "--set",
                f"storage.root={args.dir}/data",
                "--set",
                "spark.driver_memory=6g",
            ],
            check=True,
        )
        print(f"aggregate {day}: {time.perf_counter() - t:.0f} s", flush=True)


def hand_features(table, as_of: dt.date, types: list[str]) -> np.ndarray:
    """Classic count/recency features per profile: counts per event type overall and in the last
    1/7/30 days, days since the last event and since the last order/cart, history length."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from propensity.model.batches import prediction_time_ms

    end = prediction_time_ms(as_of)
    lengths = pc.list_value_length(table.column("ts")).to_numpy(zero_copy_only=False)
    owner = np.repeat(np.arange(table.num_rows), lengths)
    ts = pc.list_flatten(table.column("ts")).cast(pa.int64()).to_numpy()
    kind = pc.fill_null(
        pc.index_in(pc.list_flatten(table.column("event_type")), value_set=pa.array(types)), 0
    ).to_numpy()
    age_days = (end - ts) / 86_400_000
    cols = [np.log1p(lengths)]
    for window in (None, 1, 7, 30):
        keep = np.ones_like(age_days, bool) if window is None else age_days <= window
        counts = np.zeros((table.num_rows, len(types)))
        np.add.at(counts, (owner[keep], kind[keep]), 1)
        cols.extend(np.log1p(counts).T)
    for wanted in (None, "order", "add_to_cart"):
        keep = np.ones_like(age_days, bool) if wanted is None else kind == types.index(wanted)
        last = np.full(table.num_rows, 365.0)
        np.minimum.at(last, owner[keep], age_days[keep])
        cols.append(np.log1p(last))
    return np.column_stack(cols)


def quality(args) -> None:
    import pyarrow as pa
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from propensity import storage
    from propensity.errors import PropensityError
    from propensity.pseudonym import pseudonymise
    from propensity.training.examples import load_examples
    from propensity.training.run import train

    cfg = config(
        args.dir,
        f"storage.models={args.dir}/models-{int(time.time())}",
        f"training.max_epochs={args.epochs}",
        f"training.batch_size={args.batch_size}",
        *args.set,
    )
    day = the_day(cfg)
    t = time.perf_counter()
    try:
        meta = train(cfg, day, cold=True)
    except PropensityError as e:  # a gate rejection still publishes the version
        print(f"train: {e}")
        from propensity.registry import store

        meta = store.read_metadata(cfg, store.version_names(cfg)[-1])
    seconds = time.perf_counter() - t

    ex = load_examples(cfg, day)
    y = ex.labels[:, 0]
    val, tr = ex.val_rows, ex.train_rows
    truth_part = storage.partition(storage.join(cfg.uri("events"), "_truth"), ex.input_day)
    truth = storage.read_parquet(truth_part, columns=["profile_id", "p_order_7d"])
    ids = pa.array(pseudonymise(truth.column("profile_id"), cfg.pseudonym_key()))
    where = pa.compute.index_in(ex.table.column("profile_id"), value_set=ids).to_numpy(
        zero_copy_only=False
    )
    p_true = truth.column("p_order_7d").to_numpy()
    known = ~np.isnan(where.astype(float))
    val_known = val[known[val]]
    auc_truth = roc_auc_score(y[val_known], p_true[where[val_known].astype(int)])

    X = hand_features(ex.table, ex.input_day, cfg.events.types)
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    lr.fit(X[tr], y[tr])
    auc_lr = roc_auc_score(y[val], lr.predict_proba(X[val])[:, 1])
    auc_model = meta["metrics"]["order_7d"]["auroc"]
    result = {
        "profiles_in_snapshot": ex.table.num_rows,
        "train_examples": len(tr),
        "validation_examples": len(val),
        "validation_with_truth": int(len(val_known)),
        "positive_rate": round(float(y[val].mean()), 4),
        "median_history_length": float(np.median(ex.encoded.lengths)),
        "auc_model": round(auc_model, 4),
        "auc_truth": round(float(auc_truth), 4),
        "auc_logistic_regression": round(float(auc_lr), 4),
        "lift_share_of_best": round((auc_model - 0.5) / (auc_truth - 0.5), 3),
        "epochs_run": meta["training"]["epochs_run"],
        "best_epoch": meta["training"]["best_epoch"],
        "train_seconds": round(seconds, 1),
    }
    print(json.dumps(result, indent=2))


def speed(args) -> None:
    import torch

    from propensity.model.batches import length_buckets
    from propensity.model.network import PropensityModel
    from propensity.training.examples import load_examples
    from propensity.training.run import fit

    torch.set_num_threads(args.threads)
    cfg = config(args.dir, f"training.batch_size={args.batch_size}", "training.accelerator=cpu")
    day = the_day(cfg)
    ex = load_examples(cfg, day)
    rng = np.random.default_rng(0)
    rows = np.sort(
        rng.choice(ex.train_rows, size=min(args.rows, len(ex.train_rows)), replace=False)
    )
    lengths = ex.encoded.lengths[rows]
    labels = torch.from_numpy(ex.labels)
    bs = cfg.training.batch_size
    print(
        f"rows={len(rows)} batch={bs} hidden={cfg.model.hidden_size} threads={args.threads} "
        f"median_len={np.median(lengths):.0f} max_len={lengths.max()} "
        f"device=cpu torch={torch.__version__}",
        flush=True,
    )

    bucketed = [
        (ex.encoded.batch(rows[p]), labels[rows[p]])
        for p in length_buckets(lengths, bs, shuffle=True, seed=1)
    ]
    naive = []
    longest = int(ex.encoded.lengths.max())
    for p in np.array_split(rng.permutation(len(rows)), -(-len(rows) // bs)):
        b = ex.encoded.batch(rows[p])
        pad = longest - b.event_type.shape[1]
        for name in (
            "event_type",
            "article",
            "brand",
            "category",
            "log_gap",
            "log_price",
            "hour",
            "weekday",
        ):
            setattr(b, name, torch.nn.functional.pad(getattr(b, name), (0, pad)))
        naive.append((b, labels[rows[p]]))

    def bare(batches) -> float:
        torch.manual_seed(0)
        model = PropensityModel.from_config(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate)
        t = time.perf_counter()
        for batch, y in batches:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.gradient_clip)
            opt.step()
        return len(rows) / (time.perf_counter() - t)

    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.seconds = time.perf_counter() - self.t

    def trainer() -> float:
        import shutil

        ex_run = ex
        saved = ex.train_rows, ex.val_rows
        ex_run.train_rows, ex_run.val_rows = rows, ex.val_rows[:bs]
        timer = EpochTimer()
        folder = os.path.join(args.dir, "work", "speed")
        shutil.rmtree(folder, ignore_errors=True)
        torch.manual_seed(0)
        try:
            fit(cfg, ex_run, PropensityModel.from_config(cfg), 1, folder, [timer])
        finally:
            ex_run.train_rows, ex_run.val_rows = saved
            shutil.rmtree(folder, ignore_errors=True)
        return len(rows) / timer.seconds

    runs = {
        "trainer": trainer,
        "bare_bucketed": lambda: bare(bucketed),
        "bare_naive_padding": lambda: bare(naive),
    }
    best = dict.fromkeys(runs, 0.0)
    for r in range(args.repeats):
        for name, fn in runs.items():
            rate = fn()
            best[name] = max(best[name], rate)
            print(f"  repeat {r} {name}: {rate:,.0f} histories/s", flush=True)
    print(
        json.dumps(
            {
                **{k: round(v) for k, v in best.items()},
                "trainer_overhead_vs_bare": round(1 - best["trainer"] / best["bare_bucketed"], 3),
                "trainer_speedup_vs_naive": round(best["trainer"] / best["bare_naive_padding"], 2),
                "bucketed_speedup_vs_naive": round(
                    best["bare_bucketed"] / best["bare_naive_padding"], 2
                ),
            },
            indent=2,
        )
    )


def main() -> None:
    from propensity.ui import setup_logging

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    d = sub.add_parser("data")
    d.add_argument("--profiles", type=int, default=200_000)
    d.add_argument("--days", type=int, default=35)
    q = sub.add_parser("quality")
    q.add_argument("--epochs", type=int, default=8)
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--set", action="append", default=[], help="config override key=value")
    s = sub.add_parser("speed")
    s.add_argument("--rows", type=int, default=30_000)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--threads", type=int, default=2)
    for x in (d, q, s):
        x.add_argument("--dir", default="/tmp/bench-train")
    args = p.parse_args()
    setup_logging()
    {"data": data, "quality": quality, "speed": speed}[args.step](args)


if __name__ == "__main__":
    main()
