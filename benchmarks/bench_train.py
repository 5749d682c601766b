"""Quality and speed of `propensity train` on generated data with a known truth.

Run (by hand, not in CI):
    .venv/bin/python benchmarks/bench_train.py data --dir /tmp/bench-train --profiles 200000 \
        --days 35
    .venv/bin/python benchmarks/bench_train.py quality --dir /tmp/bench-train
    .venv/bin/python benchmarks/bench_train.py speed   --dir /tmp/bench-train [--rows 30000]

data:    `propensity generate` (Parquet; `--session-events F` for a stream F times as dense
         in events per session, e.g. 8) then the histories of every day the snapshot pairs
         need (`daily --only aggregate`: a full rebuild, then incremental days), D the last day.
quality: trains with the real job (cold, every snapshot pair), then for each target (or
         `--target NAME`) on the validation rows of every pair (and separately the gate's: the
         freshest pair's) reports the AUROC of the LSTM, of the
         baseline logistic regression the gate uses, of gradient-boosted trees on the same
         features (scikit-learn HistGradientBoosting), of the generator's truth `p_<target>`
         (knows the latent state: unreachable) and of its observable oracle
         `p_<target>_observable` (Bayes-optimal from what a history shows: the reachable
         ceiling), all against the realised labels; and each model's share of the oracle's
         lift over 0.5. Prints the load average at start and end.
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
GBDT_STOP_SHARE = 0.1  # training profiles held out for GBDT's early stopping
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
    """Generate, then aggregate every day the snapshot pairs need (one full rebuild, then the
    daily incremental merge), in one `propensity daily --only aggregate` run."""
    from propensity.events.generate import generate_stream

    cfg = config(args.dir, *args.set)
    t = time.perf_counter()
    generate_stream(cfg.uri("events"), START, args.days, args.profiles, seed=1, fmt="parquet",
                    targets=cfg.targets, session_events=args.session_events)
    print(f"generate: {time.perf_counter() - t:.0f} s", flush=True)
    last = START + dt.timedelta(days=args.days - 1)
    first = last - dt.timedelta(days=cfg.horizon_days + args.pairs - 1)
    exe = os.path.join(ROOT, ".venv", "bin", "propensity")
    t = time.perf_counter()
    subprocess.run(
        [exe, "daily", "--from", first.isoformat(), "--to", last.isoformat(), "--only",
         "aggregate", "--set", f"storage.root={args.dir}/data", "--set",
         "spark.driver_memory=6g", *[x for kv in args.set for x in ("--set", kv)]],
        check=True,
    )
    print(f"aggregate {first}..{last}: {time.perf_counter() - t:.0f} s", flush=True)


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def quality(args) -> None:
    """Truth, observable oracle, logistic regression, gradient-boosted trees and the LSTM, all
    on the validation rows of every snapshot pair, against realised labels."""
    from propensity.errors import PropensityError
    from propensity.registry import store
    from propensity.training import baseline
    from propensity.training.examples import load_examples
    from propensity.training.gate import predict
    from propensity.training.run import train

    if os.getloadavg()[0] > (os.cpu_count() or 1):
        print(f"WARNING: load average {load()} exceeds the {os.cpu_count()} cores: "
              "these numbers mean little", flush=True)
    start_load = load()
    cfg = config(
        args.dir,
        f"storage.models={args.models or f'{args.dir}/models-{int(time.time())}'}",
        f"training.max_epochs={args.epochs}",
        f"training.batch_size={args.batch_size}",
        "gate.min_lift_over_baseline=-1",  # publish whatever it is: this reports, not gates
        *args.set,
    )
    day = the_day(cfg)
    t = time.perf_counter()
    if args.models:  # re-evaluate an earlier run's model (the comparators change, it does not)
        meta = store.read_metadata(cfg, store.version_names(cfg)[-1])
    else:
        try:
            meta = train(cfg, day, cold=True)
        except PropensityError as e:  # a gate rejection still publishes the version
            print(f"train: {e}")
            meta = store.read_metadata(cfg, store.version_names(cfg)[-1])
    seconds = time.perf_counter() - t

    ex = load_examples(cfg, day)
    model, _ = store.load_model(cfg, meta["version"])
    rows = ex.val_rows  # every pair's validation rows: ~7x the gate's, so a smaller error
    p_lstm = predict(model, ex.encoded, rows, cfg.scoring.batch_size)
    p_wide = predict(_wide_part_only(model), ex.encoded, rows, cfg.scoring.batch_size)
    t_lr = time.perf_counter()
    p_lr = baseline.fit_predict(ex, list(cfg.events.types), cfg.targets, rows, cfg.training.seed)
    t_lr = time.perf_counter() - t_lr
    wanted = [args.target] if args.target else cfg.target_names
    result = {
        "load_average_start": start_load,
        "snapshot_pairs": len(ex.pairs),
        "profiles_in_freshest_snapshot": ex.pairs[0].table.num_rows,
        "train_examples": len(ex.train_rows),
        "validation_examples": len(rows),
        "gate_examples": len(ex.gate_rows),
        "median_history_length": float(np.median(ex.encoded.lengths)),
        "epochs_run": meta["training"]["epochs_run"],
        "best_epoch": meta["training"]["best_epoch"],
        "deep_part": meta["training"].get("deep_part"),
        "train_seconds": None if args.models else round(seconds, 1),
        "model": f"{cfg.uri('models')} {meta['version']}",
        "logistic_regression_seconds": round(t_lr, 1),
        "targets": {},
    }
    gbdt_rows = _profile_split(ex, ex.train_rows, GBDT_STOP_SHARE)  # the same for every target
    for name in wanted:
        j = cfg.target_names.index(name)
        result["targets"][name] = _target_quality(
            cfg, ex, rows, gbdt_rows, cfg.targets[j], ex.labels[:, j],
            {"lstm": p_lstm[:, j], "lstm_wide_part": p_wide[:, j],
             "logistic_regression": p_lr[:, j]},
        )
    result["load_average_end"] = load()
    print(json.dumps(result, indent=2))


def _wide_part_only(model):
    """A copy of `model` with every target's deep part off: its wide part alone, to show what
    the LSTM and the head add to it (the wide part is a regression on the model's counts)."""
    import copy

    wide = copy.deepcopy(model)
    wide.deep_on.zero_()
    return wide


def _profile_split(ex, rows: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """`rows` split by a keyed hash of their profile (its own salt, not the validation split's):
    (the rest, about `share` of the profiles), every cut point of a profile on one side."""
    from propensity.training.examples import split_hash

    h = np.concatenate([split_hash(p.table.column("profile_id"), "gbdt-early-stopping")
                        for p in ex.pairs])[rows]
    return rows[h >= share], rows[h < share]


def _target_quality(cfg, ex, rows, gbdt_rows, target, y, scores: dict) -> dict:
    """One target's AUROCs on the validation rows of every pair: the given scores, GBDT on the
    baseline's features (its item block too, for a target on items), the generator's truth and
    observable oracle; shares of the oracle's lift; paired differences of the LSTM."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from propensity import storage
    from propensity.pseudonym import pseudonymise
    from propensity.training import baseline
    from propensity.training.gate import paired_auc_test

    X = baseline.example_features(ex, list(cfg.events.types), target)
    t_gb = time.perf_counter()
    # Early stopping on held-out training *profiles* (`gbdt_rows`: fit, stop): sklearn's own
    # split draws rows, and a profile's 7 cut points (overlapping labels) on both sides made it
    # run to max_iter, far past the best iteration (20k: 0.638 / 0.655, against 0.660 / 0.676).
    fit_rows, stop_rows = gbdt_rows
    gbdt = HistGradientBoostingClassifier(max_iter=1000, learning_rate=0.05,
                                          early_stopping=True, random_state=0)
    gbdt.fit(X[fit_rows], y[fit_rows], X_val=X[stop_rows], y_val=y[stop_rows])
    scores = {**scores, "gbdt": gbdt.predict_proba(X[rows])[:, 1]}
    t_gb = time.perf_counter() - t_gb
    # Truth and oracle of each pair's input day, joined through the pseudonymised ids.
    column = f"p_{target.name}"
    truth = {c: np.full(len(rows), np.nan) for c in (column, f"{column}_observable")}
    pair = ex.pair_of(rows)
    for i, p in enumerate(ex.pairs):
        mine = np.flatnonzero(pair == i)
        part = storage.partition(storage.join(cfg.uri("events"), "_truth"), p.input_day)
        names = storage.open_parquet(storage.parquet_files(part)[0]).schema_arrow.names
        cols = [c for c in truth if c in names]
        t = storage.read_parquet(part, columns=["profile_id", *cols])
        ids = pa.array(pseudonymise(t.column("profile_id"), cfg.pseudonym_key()))
        where = pc.index_in(p.table.column("profile_id").take(pa.array(rows[mine] - p.start)),
                            value_set=ids).to_numpy(zero_copy_only=False)
        ok = ~np.isnan(where.astype(float))
        for c in cols:
            truth[c][mine[ok]] = t.column(c).to_numpy()[where[ok].astype(int)]
    known = ~np.isnan(truth[column])
    for c, v in truth.items():
        if not np.isnan(v).all():
            scores[c.replace(column, "truth")] = v
    gate = np.isin(rows, ex.gate_rows)
    yv = y[rows]

    def aucs(mask: np.ndarray) -> dict:
        return {k: round(float(roc_auc_score(yv[mask], v[mask])), 4) for k, v in scores.items()}

    every = aucs(known)
    ceiling = every.get("truth_observable")
    vs = {k: paired_auc_test(yv[known], scores["lstm"][known], scores[k][known])
          for k in ("lstm_wide_part", "logistic_regression", "gbdt", "truth_observable")
          if k in scores}
    return {
        "target": target.model_dump(exclude_none=True),
        "validation_examples_with_truth": int(known.sum()),
        "validation_positive_rate": round(float(yv.mean()), 4),
        "auc_all_validation": every,
        "auc_gate_rows": aucs(known & gate),
        "share_of_observable_lift": (
            {k: round((every[k] - 0.5) / (ceiling - 0.5), 3)
             for k in ("lstm", "logistic_regression", "gbdt")} if ceiling else None
        ),
        "lstm_minus": {k: {"difference": round(v["difference"], 4), "se": round(v["se"], 4)}
                       for k, v in vs.items()},
        "gbdt_seconds": round(t_gb, 1),
        "gbdt_iterations": int(gbdt.n_iter_),
    }


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
    d.add_argument("--pairs", type=int, default=7, help="snapshot pairs to aggregate for")
    d.add_argument("--session-events", type=float, default=1.0, metavar="FACTOR",
                   help="factor on the mean events per session (8: a dense stream)")
    q = sub.add_parser("quality")
    q.add_argument("--epochs", type=int, default=12)
    q.add_argument("--batch-size", type=int, default=128)
    q.add_argument("--target", help="the target to report (default: every target)")
    q.add_argument("--models", metavar="REGISTRY",
                   help="skip training: evaluate the newest version of an earlier run's registry "
                        "(DIR/models-<time>), trained with the same --set")
    for x in (d, q):
        x.add_argument("--set", action="append", default=[], help="config override key=value")
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
