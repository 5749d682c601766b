"""Scoring throughput, run by hand (not by CI): whole command per runtime, bare model, ceiling.

    .venv/bin/python benchmarks/bench_score.py --rows 500000 --hidden 128 --rounds 2
    .venv/bin/python benchmarks/bench_score.py --rss --hidden 128     # peak RSS, 300k vs 3M

Prints, all measured in this run on this machine (load average at the start; a warning when it
exceeds the cores, since the numbers then mean nothing):
- whole command: `propensity score` in a subprocess (read Parquet, encode, score, write Parquet,
  manifest) for each setting of `--whole` (runtime:workers:threads), interleaved over
  `--rounds` rounds in one process, in histories/s (median), peak RSS of its largest process,
  and ratios to the first setting and to the bare model at the same runtime and threads;
- bare model: the forward pass alone over pre-built length-bucketed batches, eager and ONNX
  Runtime (the version's published model.onnx), at 1 thread and at every core, histories/s;
- naive padding: the same model over batches in input order padded to their longest history;
- reader-thread work: encoding and padding alone (vectorised over Arrow buffers), histories/s;
- achieved GFLOP/s of the bare model against a float32 matrix-multiply ceiling measured here
  (the LSTM's recurrent matmul shape and a large square one, the better of the two).
`--rss` instead scores `--rss-rows` (300k and 3M) with one setting and prints each run's peak
RSS: memory must not grow with the input (only one shard's ids and scores are held).
`--versus KEY=VALUE` instead times the bare eager model (1 thread, `--rounds` interleaved rounds)
with the config (plus `--set`) against the same with KEY=VALUE, and prints the ratio: what an
input of the model costs to score, e.g.

    .venv/bin/python benchmarks/bench_score.py --set "targets=[{name: order_7d},
        {name: shoes_order_14d, categories: [sneakers, boots]}]" --versus model.item_share=false
Histories are synthetic (tests/_scoring_data.py: median length about 20 events).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _scoring_data import make_histories, publish_model  # noqa: E402
from conftest import make_config  # noqa: E402

from propensity import storage  # noqa: E402
from propensity.model.batches import encode, length_buckets  # noqa: E402
from propensity.scoring import layout, runtime  # noqa: E402

DAY = dt.date(2026, 1, 20)
VERSION = "2026-01-19.1"
# The whole-command settings compared by default (runtime:workers:threads); "auto" = the config's
# defaults on this machine (scoring.workers/threads 0, runtime auto: runtime.AUTO_PLAN).
WHOLE = ("eager:1:1", "eager:2:1", "eager:1:2", "onnx:1:1", "onnx:2:1", "onnx:1:2", "auto")


def write_input(cfg, rows: int, files: int) -> None:
    """histories(DAY) in `files` Parquet files, generated chunk by chunk (bounded memory)."""
    part = storage.partition(cfg.uri("histories"), DAY)
    per = -(-rows // files)
    for i in range(files):
        n = min(per, rows - i * per)
        table = make_histories(n, DAY, cfg, seed=i, id_prefix=f"b{i:03d}-")
        storage.write_parquet(table, storage.join(part, f"part-{i:05d}.parquet"), 131_072)
    storage.mark_complete(part)


def flops_per_history(model, steps: float) -> float:
    """Multiply-adds x 2 of the LSTM (input + recurrent projections) and the head, per history."""
    h, f = model.lstm.hidden_size, model.lstm.input_size
    lstm = 2 * steps * (f * 4 * h + h * 4 * h)
    head = 2 * sum(m.in_features * m.out_features for m in model.head if hasattr(m, "in_features"))
    return lstm + head


def matmul_ceiling(hidden: int, seconds: float = 2.0) -> tuple[float, float]:
    """GFLOP/s of float32 matmul: the LSTM recurrent shape [1024, H] x [H, 4H], and 2048^2."""
    out = []
    for m, k, n in ((1024, hidden, 4 * hidden), (2048, 2048, 2048)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            reps += 1
        out.append(2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return out[0], out[1]


def bare_model(model, table, batch_size: int, padded: bool) -> tuple[float, float]:
    """histories/s and padded steps per history of the forward pass alone on pre-built batches."""
    encoded = encode(table, model.spec, DAY)
    if padded:
        rows = np.arange(len(encoded))
        groups = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    else:
        groups = length_buckets(encoded.lengths, batch_size)
    batches = [encoded.batch(g) for g in groups]
    steps = sum(b.event_type.numel() for b in batches) / len(encoded)
    with torch.inference_mode():
        model(batches[0])
        start = time.perf_counter()
        for b in batches:
            torch.sigmoid(model(b))
        return len(encoded) / (time.perf_counter() - start), steps


def onnx_runtime(cfg, model, table, batch_size: int, threads: int) -> tuple[float, float] | str:
    """histories/s of the published model.onnx in ONNX Runtime on the same batches as
    `bare_model`, and its largest score difference to eager; or why that row is skipped."""
    from propensity.registry import onnx_export, store

    if not runtime.onnxruntime_available():
        return "onnxruntime is not installed (the onnx extra)"
    meta = store.read_metadata(cfg, VERSION)
    data = store.read_onnx(cfg, VERSION, meta)
    if data is None:
        return "the version was published without model.onnx (see the log above)"
    encoded = encode(table, model.spec, DAY)
    batches = [encoded.batch(g) for g in length_buckets(encoded.lengths, batch_size)]
    scorer = runtime.OnnxScorer(onnx_export.session(data, threads), model.spec, model.targets)
    diff = onnx_export.max_abs_diff(model, scorer.session, [batches[0], batches[-1]])
    scorer.probabilities(batches[0])
    start = time.perf_counter()
    for b in batches:
        scorer.probabilities(b)
    return len(encoded) / (time.perf_counter() - start), diff


def reader_work(model, table, batch_size: int) -> float:
    """histories/s of what the reader thread does per record batch: encode and build batches."""
    from propensity.scoring.engine import model_batches

    start = time.perf_counter()
    for rb in table.to_batches(max_chunksize=65_536):
        model_batches(encode(rb, model.spec, DAY), batch_size)
    return table.num_rows / (time.perf_counter() - start)


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return out


def watch_peak_rss(proc: subprocess.Popen, every_s: float = 0.1) -> float:
    """Wait for `proc`; the largest VmHWM (peak RSS, kB) of it and its worker processes. Polled
    from /proc because getrusage/wait4 report at least this process's own size: a child's
    maxrss starts from its parent's at fork. VmHWM only grows, so polling misses at most the
    last `every_s` of a process's life."""
    peak: dict[int, int] = {}
    while proc.poll() is None:
        for pid in _tree(proc.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak[pid] = max(peak.get(pid, 0), int(line.split()[1]))
        time.sleep(every_s)
    return float(max(peak.values(), default=0))


def whole_command(tmp: str, sets: list[str], setting: str) -> dict:
    """One `propensity score` run in a subprocess with `setting` ("runtime:workers:threads",
    "auto" = the config's defaults): histories/s, wall seconds, peak RSS (MB) of its largest
    process, what the manifest says it ran with."""
    extra = []
    if setting != "auto":
        rt, workers, threads = setting.split(":")
        extra = ["--workers", workers, "--set", f"scoring.runtime={rt}",
                 "--set", f"scoring.threads={threads}"]
    cmd = [str(Path(sys.executable).parent / "propensity"), "score", "--date", str(DAY),
           "--restart", "--set", f"storage.root={tmp}", *[x for s in sets for x in ("--set", s)],
           *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            stderr=subprocess.DEVNULL)
    peak_kb = watch_peak_rss(proc)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode})")
    cfg = make_config(tmp, *sets)
    manifest = storage.read_json(
        storage.join(storage.partition(cfg.uri("predictions"), DAY), layout.MANIFEST)
    )
    return {"per_s": manifest["rows"] / wall, "wall": wall, "rss_mb": peak_kb / 1024,
            "rows": manifest["rows"], "ran": "{runtime}:{workers}:{threads}".format(**manifest)}


def load_check(cores: int) -> float:
    """The 1-minute load average at the start, with a warning when it exceeds the cores."""
    load = os.getloadavg()[0]
    if load > cores:
        print(f"WARNING: load average {load:.1f} > {cores} cores: other work is running, these "
              "figures mean little; rerun on an idle machine", file=sys.stderr)
    return load


def rss_mode(args, tmp: str, sets: list[str]) -> None:
    """Peak RSS of the whole command on each of --rss-rows histories (same setting)."""
    cfg = make_config(tmp, *sets)
    publish_model(cfg, VERSION, onnx=True)
    results = []
    for rows in args.rss_rows:
        write_input(cfg, rows, args.files or max(1, rows // 250_000))
        r = whole_command(tmp, sets, args.rss_setting)
        results.append(r)
        print(f"{rows:>10,} histories ({r['ran']}): {r['per_s']:10,.0f} /s  peak RSS "
              f"{r['rss_mb']:,.0f} MB  ({r['wall']:.1f}s)")
    print(f"peak RSS {args.rss_rows[-1]:,} / {args.rss_rows[0]:,} = "
          f"{results[-1]['rss_mb'] / results[0]['rss_mb']:.2f}x")


def versus_mode(args, tmp: str, sets: list[str]) -> None:
    """Bare eager histories/s of the model of `sets` and of `sets` + `--versus`, interleaved."""
    from propensity.model.network import PropensityModel

    torch.set_num_threads(1)
    cfgs = {"config": make_config(tmp, *sets), args.versus: make_config(tmp, *sets, args.versus)}
    table = make_histories(args.bare_rows, DAY, cfgs["config"], seed=99)
    models = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        models[name] = PropensityModel.from_config(cfg).eval()
    runs = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            runs[name].append(bare_model(model, table, cfgs[name].scoring.batch_size, False)[0])
    per_s = {name: float(np.median(r)) for name, r in runs.items()}
    print(f"torch {torch.__version__}, hidden {args.hidden}, 1 thread, {args.bare_rows:,} "
          f"histories, median of {args.rounds} interleaved rounds, load average now "
          f"{os.getloadavg()[0]:.1f}; --set {' '.join(sets[1:]) or '(none)'}")
    for name, value in per_s.items():
        print(f"  {name:<30}: {value:10,.0f} histories/s, x{value / per_s['config']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="histories to score end to end")
    p.add_argument("--files", type=int, default=0, help="input files (default: one per 250k)")
    p.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    p.add_argument("--bare-rows", type=int, default=100_000, help="histories for the bare runs")
    p.add_argument("--whole", default=",".join(WHOLE),
                   help="whole-command settings runtime:workers:threads (or auto), interleaved")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the interleaved settings")
    p.add_argument("--rss", action="store_true", help="only the peak-RSS comparison")
    p.add_argument("--rss-rows", type=lambda v: [int(x) for x in v.split(",")],
                   default=[300_000, 3_000_000], help="input sizes of --rss")
    p.add_argument("--rss-setting", default="auto", help="the whole-command setting of --rss")
    p.add_argument("--dir", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--set", action="append", default=[], help="config override (repeatable)")
    p.add_argument("--versus", default=None,
                   help="KEY=VALUE: only the bare model with and without this override")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    load = load_check(cores)
    settings = args.whole.split(",")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        sets = [f"model.hidden_size={args.hidden}", *args.set]
        if args.versus:
            return versus_mode(args, tmp, sets)
        if args.rss:
            return rss_mode(args, tmp, sets)
        cfg = make_config(tmp, *sets)
        files = args.files or max(1, args.rows // 250_000)
        t0 = time.perf_counter()
        write_input(cfg, args.rows, files)
        print(
            f"input: {args.rows:,} histories in {files} files "
            f"({time.perf_counter() - t0:.1f}s to generate)"
        )
        model = publish_model(cfg, VERSION, onnx=True)
        runs: dict[str, list[dict]] = {s: [] for s in settings}
        for _ in range(args.rounds):  # interleaved: a drift of the machine hits every setting
            for setting in settings:
                runs[setting].append(whole_command(tmp, sets, setting))

        table = make_histories(args.bare_rows, DAY, cfg, seed=99)
        bare: dict[tuple[str, int], float] = {}
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            bare["eager", threads], steps_b = bare_model(model, table, cfg.scoring.batch_size,
                                                         padded=False)
            onnx = onnx_runtime(cfg, model, table, cfg.scoring.batch_size, threads)
            if not isinstance(onnx, str):
                bare["onnx", threads], onnx_diff = onnx
        torch.set_num_threads(1)
        bucketed = bare["eager", 1]
        naive, steps_n = bare_model(model, table, cfg.scoring.batch_size, padded=True)
        reader = reader_work(model, table, cfg.scoring.batch_size)
        mean_len = float(np.mean(encode(table, model.spec, DAY).lengths))
        gflops = bucketed * flops_per_history(model, steps_b) / 1e9
        useful = bucketed * flops_per_history(model, mean_len) / 1e9
        lstm_shape, square = matmul_ceiling(args.hidden)
        ceiling = max(lstm_shape, square)

    print(
        f"torch {torch.__version__}, cores {cores}, hidden {args.hidden}, "
        f"batch {cfg.scoring.batch_size}, load average at start {load:.1f}, now "
        f"{os.getloadavg()[0]:.1f}"
    )
    first = float(np.median([r["per_s"] for r in runs[settings[0]]]))
    print(f"whole command ({args.rows:,} histories, median of {args.rounds} interleaved rounds; "
          "setting = runtime:workers:threads as run):")
    for setting in settings:
        per_s = float(np.median([r["per_s"] for r in runs[setting]]))
        ran = runs[setting][0]["ran"]
        rt, workers, threads = ran.split(":")
        base = bare.get((rt, int(threads) * int(workers)))
        vs_bare = f", whole/bare {per_s / base:.2f}" if base and int(workers) == 1 else ""
        print(f"  {setting:<12} ({ran:<9}): {per_s:10,.0f} histories/s  "
              f"x{per_s / first:.2f} of {settings[0]}{vs_bare}; peak RSS "
              f"{max(r['rss_mb'] for r in runs[setting]):,.0f} MB; 3M in "
              f"{3e6 / per_s / 60:.1f} min")
    for (rt, threads), per_s in sorted(bare.items()):
        print(f"bare model, {rt:<5} {threads} thread(s): {per_s:10,.0f} histories/s")
    if ("onnx", 1) in bare:
        print(f"ONNX/eager, bare   : {bare['onnx', 1] / bare['eager', 1]:.2f}x at 1 thread, "
              f"{bare['onnx', cores] / bare['eager', cores]:.2f}x at {cores} "
              f"(max |score difference| {onnx_diff:.1e})")
    else:
        print(f"ONNX Runtime       : skipped ({onnx})")
    print(f"steps/history      : {steps_b:.1f} bucketed, mean length {mean_len:.1f}")
    print(
        f"naive padding      : {naive:10,.0f} histories/s  ({steps_n:.1f} steps/history)  "
        f"bucketed/naive = {bucketed / naive:.2f}x (1 thread)"
    )
    print(f"reader thread work : {reader:10,.0f} histories/s  (encode + length-bucketed padding, "
          f"vectorised over Arrow buffers)")
    print(
        f"achieved           : {gflops:.1f} GFLOP/s computed ({useful:.1f} useful) on 1 thread vs "
        f"matmul ceiling {ceiling:.1f} GFLOP/s (LSTM shape {lstm_shape:.1f}, 2048^2 "
        f"{square:.1f}) = {gflops / ceiling:.0%}"
    )


if __name__ == "__main__":
    main()
