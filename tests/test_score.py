"""Batch scoring: layout, trainer-equal scores, resumption, array jobs, version pinning, S3, CLI."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from _scoring_data import publish_model, write_histories
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.errors import BadInput, MissingInput
from propensity.model.batches import encode
from propensity.scoring import layout
from propensity.scoring.run import run

DAY = dt.date(2026, 1, 20)
runner = CliRunner()


@pytest.fixture
def cfg(tmp_path):
    # Small read batches and shards so that a few hundred rows make several of each.
    return make_config(tmp_path / "data", "scoring.read_rows=128", "scoring.shard_rows=300",
                       "scoring.batch_size=64")


def cli(cfg, *args):
    result = runner.invoke(app, ["score", "--date", str(DAY), *args,
                                 "--set", f"storage.root={cfg.storage.root}",
                                 "--set", "scoring.read_rows=128",
                                 "--set", "scoring.shard_rows=300",
                                 "--set", "scoring.batch_size=64"])
    return result


def predictions(cfg, day=DAY) -> pa.Table:
    return storage.read_parquet(storage.partition(cfg.uri("predictions"), day))


def padded_oracle(model, table: pa.Table, day) -> dict[str, float]:
    """The trainer's forward on ONE batch padded to the longest history: no bucketing at all."""
    encoded = encode(table, model.spec, day)
    with torch.inference_mode():
        probs = torch.sigmoid(model(encoded.batch(np.arange(len(encoded))))).numpy()
    return dict(zip(table.column("profile_id").to_pylist(), probs[:, 0].tolist()))


def assert_same_scores(a: pa.Table, b: pa.Table):
    """Same profiles in the same order, scores equal up to float rounding of thread splits."""
    assert a.column("profile_id").equals(b.column("profile_id"))
    np.testing.assert_allclose(a.column("order_7d").to_numpy(), b.column("order_7d").to_numpy(),
                               atol=1e-6)


def assert_one_row_per_profile(out: pa.Table, histories: pa.Table):
    ids = out.column("profile_id")
    assert out.num_rows == histories.num_rows
    assert pc.count_distinct(ids).as_py() == histories.num_rows
    assert set(ids.to_pylist()) == set(histories.column("profile_id").to_pylist())


def test_scores_equal_the_trainers_forward_and_layout_is_complete(cfg):
    histories = write_histories(cfg, DAY, 700, files=2, row_group_size=100)
    model = publish_model(cfg, "2026-01-19.1")
    manifest = run(cfg, DAY)

    out = predictions(cfg)
    assert out.schema.names == ["profile_id", "order_7d", "model_version"]
    assert out.schema.field("order_7d").type == pa.float32()
    assert_one_row_per_profile(out, histories)
    assert set(out.column("model_version").to_pylist()) == {"2026-01-19.1"}
    oracle = padded_oracle(model, histories, DAY)
    got = dict(zip(out.column("profile_id").to_pylist(), out.column("order_7d").to_pylist()))
    np.testing.assert_allclose([got[k] for k in oracle], list(oracle.values()), atol=1e-5)

    part = storage.partition(cfg.uri("predictions"), DAY)
    assert storage.is_complete(part)
    assert manifest == storage.read_json(storage.join(part, layout.MANIFEST))
    assert manifest["rows"] == 700 and manifest["model"]["version"] == "2026-01-19.1"
    assert len(manifest["model"]["sha256"]) == 64
    assert manifest["input"]["partition"] == f"dt={DAY}"  # relative to the histories root
    # 2 files of 350 rows in row groups of 100, shards of <= 300 rows: 2 shards per file.
    assert sorted(manifest["shards"]) == ["00000-00000", "00000-00003", "00001-00000",
                                          "00001-00003"]
    assert sum(s["rows"] for s in manifest["shards"].values()) == 700
    assert manifest["stats"]["rows"] == 700
    assert manifest["stats"]["scores"]["order_7d"]["n"] == 700
    latest = storage.read_json(storage.join(cfg.uri("predictions"), "latest.json"))
    assert latest["date"] == str(DAY) and latest["rows"] == 700


def test_rerun_of_a_complete_day_is_a_no_op_and_latest_never_moves_back(cfg):
    write_histories(cfg, DAY, 200, files=1)
    write_histories(cfg, DAY - dt.timedelta(days=1), 100, files=1)
    publish_model(cfg, "2026-01-19.1")
    run(cfg, DAY)
    part = storage.partition(cfg.uri("predictions"), DAY)
    before = {u: storage.resolve(u)[0].get_file_info(storage.resolve(u)[1]).mtime_ns
              for u in storage.list_files(part)}
    run(cfg, DAY)
    after = {u: storage.resolve(u)[0].get_file_info(storage.resolve(u)[1]).mtime_ns
             for u in storage.list_files(part)}
    assert before == after
    run(cfg, DAY - dt.timedelta(days=1))  # a backfill of an older day
    latest = storage.read_json(storage.join(cfg.uri("predictions"), "latest.json"))
    assert latest["date"] == str(DAY)


def _mtimes(part):
    fs = storage.resolve(part)[0]
    return {u.rsplit("/", 1)[1]: fs.get_file_info(storage.resolve(u)[1]).mtime_ns
            for u in storage.list_files(part, suffix=".parquet")}


def test_resume_after_a_lost_shard_scores_only_that_shard(cfg):
    histories = write_histories(cfg, DAY, 700, files=2, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    run(cfg, DAY)
    part = storage.partition(cfg.uri("predictions"), DAY)
    first = _mtimes(part)
    # A crash after some shards: one shard file, the manifest and the marker never got written.
    storage.delete(storage.join(part, "part-00001-00000.parquet"))
    storage.delete(storage.join(part, layout.MANIFEST))
    storage.delete(storage.join(part, "_SUCCESS"))
    with pytest.raises(storage.IncompletePartition):
        storage.read_parquet(part)
    run(cfg, DAY)
    second = _mtimes(part)
    assert set(second) == set(first)
    changed = {k for k in first if first[k] != second[k]}
    assert changed == {"part-00001-00000.parquet"}
    assert_one_row_per_profile(predictions(cfg), histories)


def test_a_crash_mid_run_leaves_no_marker_and_the_rerun_completes(cfg):
    """A malformed history in the second file fails the run after the first file's shards are
    written; once the file is repaired (same layout), the rerun scores only what is missing."""
    # One process, so the first file's shards are done before the second file fails (with
    # several workers the failure is reported as a failed worker instead).
    cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"workers": 1})})
    good = write_histories(cfg, DAY, 700, files=2, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    hist_part = storage.partition(cfg.uri("histories"), DAY)
    second = storage.join(hist_part, "part-00001.parquet")
    original = storage.read_bytes(second)
    rows = storage.open_parquet(second).read().combine_chunks()
    broken_price = pa.ListArray.from_arrays(  # row 0 of that file gets one price too few
        pa.array(np.r_[0, np.cumsum(pc.list_value_length(rows["price"]).to_numpy())] -
                 np.r_[0, np.ones(rows.num_rows, int)]),
        pc.list_flatten(rows["price"].chunk(0)).slice(1),
    )
    bad = rows.set_column(rows.schema.get_field_index("price"), "price", broken_price)
    storage.write_parquet(bad, second, row_group_size=100)

    with pytest.raises(BadInput, match="part-00001.parquet.*price"):
        run(cfg, DAY)
    part = storage.partition(cfg.uri("predictions"), DAY)
    assert not storage.is_complete(part)
    done = _mtimes(part)
    assert set(done) == {"part-00000-00000.parquet", "part-00000-00003.parquet"}

    storage.write_bytes(second, original)  # the input is repaired
    run(cfg, DAY)
    after = _mtimes(part)
    assert all(after[k] == done[k] for k in done)
    assert_one_row_per_profile(predictions(cfg), good)


def test_array_job_with_two_workers_via_the_cli(cfg):
    histories = write_histories(cfg, DAY, 700, files=2, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    part = storage.partition(cfg.uri("predictions"), DAY)

    r0 = cli(cfg, "--worker-index", "0", "--num-workers", "2")
    assert r0.exit_code == 0, r0.output
    assert not storage.is_complete(part)
    assert set(_mtimes(part)) == {"part-00000-00000.parquet", "part-00001-00000.parquet"}
    early = cli(cfg, "--finalize")
    assert early.exit_code == 3 and "2 of 4 shards not scored" in early.output

    r1 = cli(cfg, "--worker-index", "1", "--num-workers", "2")
    assert r1.exit_code == 0, r1.output
    assert storage.is_complete(part)  # the last worker finalized
    manifest = storage.read_json(storage.join(part, layout.MANIFEST))
    assert {s["worker"] for s in manifest["shards"].values()} == {"0", "1"}
    assert_one_row_per_profile(predictions(cfg), histories)
    assert cli(cfg, "--finalize").exit_code == 0  # idempotent


def test_local_worker_processes_give_the_same_predictions(cfg, tmp_path):
    write_histories(cfg, DAY, 600, files=2, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    run(cfg, DAY, workers=1)
    one = predictions(cfg).sort_by("profile_id")
    run(cfg, DAY, workers=2, restart=True)
    two = predictions(cfg).sort_by("profile_id")
    assert_same_scores(one, two)
    manifest = storage.read_json(storage.join(storage.partition(cfg.uri("predictions"), DAY),
                                              layout.MANIFEST))
    assert {s["worker"] for s in manifest["shards"].values()} == {"0", "1"}


def test_a_new_champion_refuses_to_mix_with_partial_output(cfg):
    write_histories(cfg, DAY, 700, files=2, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    assert cli(cfg, "--worker-index", "0", "--num-workers", "2").exit_code == 0
    publish_model(cfg, "2026-01-20.1", seed=1)  # promoted while the array job runs

    refused = cli(cfg, "--worker-index", "1", "--num-workers", "2")
    assert refused.exit_code == 4
    assert "2026-01-19.1" in refused.output and "--restart" in refused.output
    with pytest.raises(BadInput, match="cannot be mixed"):
        run(cfg, DAY)

    manifest = run(cfg, DAY, restart=True)
    assert manifest["model"]["version"] == "2026-01-20.1"
    assert set(predictions(cfg).column("model_version").to_pylist()) == {"2026-01-20.1"}


def test_spark_engine_writes_the_same_predictions(cfg, spark):
    histories = write_histories(cfg, DAY, 500, files=2, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    run(cfg, DAY)
    local = predictions(cfg).sort_by("profile_id")
    manifest = run(cfg, DAY, engine="spark", rescore=True)  # a replacement, scored on Spark
    assert manifest["engine"] == "spark" and manifest["generation"] == 1
    assert {s["worker"] for s in manifest["shards"].values()} == {"spark"}
    on_spark = predictions(cfg).sort_by("profile_id")
    assert_same_scores(local, on_spark)
    # Downstream readers: Spark reads the partition as it is (side files start with `_`).
    read = spark.read.parquet(storage.partition(cfg.uri("predictions"), DAY))
    assert sorted(r.profile_id for r in read.select("profile_id").collect()) == sorted(
        histories.column("profile_id").to_pylist())


def test_predictions_on_s3(tmp_path, s3_bucket):
    cfg = make_config(tmp_path / "data", f"storage.predictions=s3://{s3_bucket}/predictions",
                      "scoring.shard_rows=150")
    histories = write_histories(cfg, DAY, 300, files=1, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    manifest = run(cfg, DAY)
    part = f"s3://{s3_bucket}/predictions/dt={DAY}"
    assert storage.is_complete(part)
    assert len(manifest["shards"]) == 3  # one row group of 100 each (shard_rows=150)
    assert_one_row_per_profile(storage.read_parquet(part), histories)
    latest = storage.read_json(f"s3://{s3_bucket}/predictions/latest.json")
    assert latest["partition"] == f"dt={DAY}"  # relative to the predictions root


def test_cli_exit_codes(cfg):
    assert cli(cfg).exit_code == 3  # no histories(D)
    write_histories(cfg, DAY, 50, files=1)
    no_model = cli(cfg)
    assert no_model.exit_code == 3 and "no champion" in no_model.output
    bad_date = runner.invoke(app, ["score", "--date", "2026-13-01"])
    assert bad_date.exit_code == 2
    both = cli(cfg, "--workers", "2", "--worker-index", "0", "--num-workers", "2")
    assert both.exit_code == 2
    publish_model(cfg, "2026-01-19.1")
    restart_in_array = cli(cfg, "--restart", "--worker-index", "0", "--num-workers", "2")
    assert restart_in_array.exit_code == 2
    ok = cli(cfg)
    assert ok.exit_code == 0, ok.output


def test_planning_refuses_an_incomplete_input(cfg):
    write_histories(cfg, DAY, 50, files=1)
    storage.delete(storage.join(storage.partition(cfg.uri("histories"), DAY), "_SUCCESS"))
    with pytest.raises(storage.IncompletePartition):
        layout.plan_shards(storage.partition(cfg.uri("histories"), DAY), 100)
    with pytest.raises(MissingInput):
        layout.finalize(storage.partition(cfg.uri("predictions"), DAY),
                        layout.Plan("x", [layout.Shard("00000-00000", "x", [0], 1)]),
                        layout.ModelRef("m", "v", "s"), DAY)

