"""Scoring throughput, run by hand (not by CI): whole command, bare model, naive padding, ceiling.

    .venv/bin/python benchmarks/bench_score.py --rows 3000000 --hidden 128

Prints, all measured in this run on this machine:
- whole command: `propensity score` in a subprocess (read Parquet, encode, score, write Parquet,
  manifest) in histories/s, wall seconds and the subprocess's peak RSS;
- bare model: the forward pass alone over pre-built length-bucketed batches, histories/s;
- naive padding: the same model over batches in input order padded to their longest history;
- reader-thread work: encoding and padding alone (vectorised over Arrow buffers), histories/s;
- achieved GFLOP/s of the bare model against a float32 matrix-multiply ceiling measured here
  (the LSTM's recurrent matmul shape and a large square one, the better of the two).
Histories are synthetic (tests/_scoring_data.py: median length about 20 events).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
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
from propensity.scoring import layout  # noqa: E402

DAY = dt.date(2026, 1, 20)


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


def _expm1(g, x):
    """ONNX has no expm1 (opset 17): exp(x) - 1 in the exported graph only. It loses digits for
    |x| near 0, which the printed score difference to eager shows."""
    return g.op("Sub", g.op("Exp", x), g.op("Constant", value_t=torch.tensor(1.0)))


def onnx_runtime(model, table, batch_size: int) -> tuple[float, float] | str:
    """histories/s of the same model exported to ONNX and run by ONNX Runtime (same batches),
    and the largest score difference to eager; or why that row is skipped."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed (the onnx extra)"
    import io
    import warnings

    from propensity.model.batches import Batch

    names = ["event_type", "article", "brand", "category", "log_gap", "log_price", "hour",
             "weekday", "lengths", "context"]

    class Scores(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            return torch.sigmoid(self.inner(Batch(**dict(zip(names, xs)), rows=xs[8])))

    encoded = encode(table, model.spec, DAY)
    batches = [encoded.batch(g) for g in length_buckets(encoded.lengths, batch_size)]
    axes = {n: {0: "B", 1: "T"} for n in names[:8]} | {"lengths": {0: "B"}, "context": {0: "B"}}
    buf = io.BytesIO()
    torch.onnx.register_custom_op_symbolic("aten::expm1", _expm1, 17)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Scores(model).eval(), tuple(getattr(batches[0], n) for n in names),
                              buf, input_names=names, output_names=["p"], dynamic_axes=axes,
                              dynamo=False, opset_version=17)
    except Exception as e:  # noqa: BLE001 - an operator ONNX cannot express: skip the row, say why
        return f"export failed: {type(e).__name__}: {str(e).splitlines()[0]}"
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::expm1", 17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
    feeds = [{n: getattr(b, n).numpy() for n in names} for b in batches]
    with torch.inference_mode():
        diff = max(float(np.abs(session.run(None, feeds[i])[0] - torch.sigmoid(model(batches[i]))
                                .numpy()).max()) for i in (0, len(batches) - 1))
    start = time.perf_counter()
    for f in feeds:
        session.run(None, f)
    return len(encoded) / (time.perf_counter() - start), diff


def reader_work(model, table, batch_size: int) -> float:
    """histories/s of what the reader thread does per record batch: encode and build batches."""
    from propensity.scoring.engine import model_batches

    start = time.perf_counter()
    for rb in table.to_batches(max_chunksize=65_536):
        model_batches(encode(rb, model.spec, DAY), batch_size)
    return table.num_rows / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="histories to score end to end")
    p.add_argument("--files", type=int, default=0, help="input files (default: one per 250k)")
    p.add_argument("--hidden", type=int, default=128, help="LSTM hidden size")
    p.add_argument("--bare-rows", type=int, default=100_000, help="histories for the bare runs")
    p.add_argument("--workers", type=int, default=1, help="--workers of the whole command")
    p.add_argument("--threads", type=int, default=0,
                   help="scoring.threads (torch threads per process; 0 = the command's default)")
    p.add_argument("--dir", default=None, help="working folder (default: a temporary one)")
    args = p.parse_args()
    # The same threads as one `propensity score` process: by default one core is left to its
    # reader thread.
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - 1))

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        sets = [f"model.hidden_size={args.hidden}", f"scoring.threads={args.threads}"]
        cfg = make_config(tmp, *sets)
        files = args.files or max(1, args.rows // 250_000)
        t0 = time.perf_counter()
        write_input(cfg, args.rows, files)
        print(
            f"input: {args.rows:,} histories in {files} files "
            f"({time.perf_counter() - t0:.1f}s to generate)"
        )
        model = publish_model(cfg, "2026-01-19.1")
        cmd = [
            str(Path(sys.executable).parent / "propensity"),
            "score",
            "--date",
            str(DAY),
            "--workers",
            str(args.workers),
            "--set",
            f"storage.root={tmp}",
            *[x for s in sets for x in ("--set", s)],
        ]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        manifest = storage.read_json(
            storage.join(storage.partition(cfg.uri("predictions"), DAY), layout.MANIFEST)
        )
        assert manifest["rows"] == args.rows
        whole = args.rows / wall

        table = make_histories(args.bare_rows, DAY, cfg, seed=99)
        bucketed, steps_b = bare_model(model, table, cfg.scoring.batch_size, padded=False)
        naive, steps_n = bare_model(model, table, cfg.scoring.batch_size, padded=True)
        onnx = onnx_runtime(model, table, cfg.scoring.batch_size)
        reader = reader_work(model, table, cfg.scoring.batch_size)
        mean_len = float(np.mean(encode(table, model.spec, DAY).lengths))
        gflops = bucketed * flops_per_history(model, steps_b) / 1e9
        useful = bucketed * flops_per_history(model, mean_len) / 1e9
        lstm_shape, square = matmul_ceiling(args.hidden)
        ceiling = max(lstm_shape, square)

    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cores {os.cpu_count()}, hidden {args.hidden}, batch {cfg.scoring.batch_size}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"whole command      : {whole:10,.0f} histories/s  ({wall:.1f}s for {args.rows:,}; "
        f"peak RSS {peak_mb:,.0f} MB; 3M would take {3e6 / whole / 60:.1f} min)"
    )
    print(
        f"bare model, bucketed: {bucketed:10,.0f} histories/s  "
        f"({steps_b:.1f} steps/history, mean length {mean_len:.1f})"
    )
    print(
        f"naive padding      : {naive:10,.0f} histories/s  ({steps_n:.1f} steps/history)  "
        f"bucketed/naive = {bucketed / naive:.2f}x"
    )
    if isinstance(onnx, str):
        print(f"ONNX Runtime       : skipped ({onnx})")
    else:
        print(f"ONNX Runtime       : {onnx[0]:10,.0f} histories/s  (same batches; max |score "
              f"difference| to eager {onnx[1]:.1e}) ONNX/eager = {onnx[0] / bucketed:.2f}x")
    print(f"reader thread work : {reader:10,.0f} histories/s  (encode + length-bucketed padding, "
          f"vectorised over Arrow buffers)")
    print(f"whole/bare         : {whole / bucketed:.2f}")
    print(
        f"achieved           : {gflops:.1f} GFLOP/s computed ({useful:.1f} useful) vs matmul "
        f"ceiling {ceiling:.1f} GFLOP/s (LSTM shape {lstm_shape:.1f}, 2048^2 {square:.1f}) "
        f"= {gflops / ceiling:.0%}"
    )


if __name__ == "__main__":
    main()
