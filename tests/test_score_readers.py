"""Predictions as downstream readers and operators meet them: any Parquet reader opens a day with
no filter, a storage root copied elsewhere re-runs `score` as a no-op, partitions scored before
side files took a `_` (and paths became relative) still read and re-run."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from _scoring_data import publish_model, write_histories
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.cycle.stages import prediction_model
from propensity.predictions import LEGACY_MANIFEST
from propensity.scoring import layout

DAY = dt.date(2026, 1, 20)
runner = CliRunner()
SMALL = ["scoring.read_rows=128", "scoring.shard_rows=300", "scoring.batch_size=64"]


def score(root, *args):
    sets = [a for kv in [f"storage.root={root}", *SMALL] for a in ("--set", kv)]
    return runner.invoke(app, ["score", "--date", str(DAY), *args, *sets])


def day_files(part: str) -> dict[str, int]:
    """Every file of a partition, side files included: name -> mtime_ns."""
    fs, path = storage.resolve(part)
    infos = fs.get_file_info(pa.fs.FileSelector(path))
    return {i.base_name: i.mtime_ns for i in infos}


@pytest.fixture
def scored(tmp_path):
    """histories(D) of 700 profiles in 2 files scored by the CLI; (root, histories table)."""
    root = tmp_path / "data"
    cfg = make_config(root, *SMALL)
    histories = write_histories(cfg, DAY, 700, files=2, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    result = score(root)
    assert result.exit_code == 0, result.output
    return root, histories


def test_any_parquet_reader_opens_a_day_with_no_filter(scored):
    root, histories = scored
    part = f"{root}/predictions/dt={DAY}"
    assert {"_manifest.json", "_SUCCESS", "_scoring.json"} <= set(day_files(part))
    assert not [n for n in day_files(part) if not n.endswith(".parquet") and n[0] not in "_."]
    want = storage.read_parquet(part).sort_by("profile_id")
    ids = sorted(histories.column("profile_id").to_pylist())
    assert want.column("profile_id").to_pylist() == ids  # one row per profile of histories(D)

    readers = {
        "pyarrow.dataset": ds.dataset(part, format="parquet").to_table(),
        "pyarrow.parquet.read_table": pq.read_table(part),
        "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{part}')").fetch_arrow_table(),
    }
    for name, table in readers.items():
        table = table.select(want.schema.names).sort_by("profile_id")
        assert table.num_rows == len(ids), name
        assert table.column("profile_id").to_pylist() == ids, name
        assert table.column("order_7d").to_pylist() == want.column("order_7d").to_pylist(), name


def test_a_copied_root_reruns_score_as_a_no_op(scored, tmp_path):
    root, _ = scored
    part = f"{root}/predictions/dt={DAY}"
    manifest = storage.read_json(f"{part}/{layout.MANIFEST}")
    state = storage.read_json(f"{part}/{layout.STATE}")
    latest = storage.read_json(f"{root}/predictions/{layout.LATEST}")
    stored = json.dumps([manifest, state, latest])
    assert str(root) not in stored  # every stored path is relative to its dataset's root
    assert manifest["input"]["partition"] == latest["partition"] == f"dt={DAY}"

    moved = tmp_path / "restored"
    shutil.copytree(root, moved)  # a backup restored elsewhere (copy2 keeps mtimes)
    shutil.rmtree(root)
    new_part = f"{moved}/predictions/dt={DAY}"
    before = day_files(new_part)
    again = score(moved)
    assert again.exit_code == 0, again.output
    assert "already complete" in again.output
    assert day_files(new_part) == before  # nothing rewritten
    assert storage.read_parquet(new_part).equals(
        pa.concat_tables([pq.read_table(f"{new_part}/{n}") for n in sorted(before)
                          if n.endswith(".parquet")]))
    assert storage.read_json(f"{new_part}/{layout.MANIFEST}")["rows"] == 700


def test_a_mismatch_says_what_differs(scored):
    root, _ = scored
    cfg = make_config(root, *SMALL)
    part = f"{root}/predictions/dt={DAY}"
    storage.delete(f"{part}/_SUCCESS")  # a partial run ...
    write_histories(cfg, DAY, 600, files=2, row_group_size=100)  # ... then histories rewritten
    refused = score(root)
    assert refused.exit_code == 4
    text = " ".join(refused.output.split())
    assert f"histories dt={DAY} were rewritten since" in text
    assert "700 rows in 4 shards of 2 files then, 600 rows in 2 shards of 2 files now" in text
    assert "--restart" in text
    assert score(root, "--restart").exit_code == 0
    assert storage.read_json(f"{part}/{layout.MANIFEST}")["rows"] == 600


def _make_legacy(root, part: str) -> None:
    """Rewrite a scored partition as the previous release left it: `manifest.json`, absolute
    partition URIs, a fingerprint over absolute file URIs."""
    cfg = make_config(root, *SMALL)
    histories = storage.partition(cfg.uri("histories"), DAY)
    plan = layout.plan_shards(histories, cfg.scoring.shard_rows)
    legacy_input = {"partition": histories, "fingerprint": plan.fingerprint(base=histories)}
    state = storage.read_json(f"{part}/{layout.STATE}")
    storage.write_json(f"{part}/{layout.STATE}", {**state, "input": legacy_input})
    manifest = storage.read_json(f"{part}/{layout.MANIFEST}")
    storage.write_json(f"{part}/{LEGACY_MANIFEST}",
                       {**manifest, "input": {**legacy_input, "rows": plan.rows}})
    storage.delete(f"{part}/{layout.MANIFEST}")


def test_a_partition_of_the_previous_layout_still_reads_and_reruns(scored, tmp_path):
    root, _ = scored
    part = f"{root}/predictions/dt={DAY}"
    _make_legacy(root, part)
    assert prediction_model(make_config(root), DAY) == "2026-01-19.1"
    monitored = runner.invoke(app, ["monitor", "--date", str(DAY), "--set", f"storage.root={root}"])
    assert monitored.exit_code == 0, monitored.output
    report = storage.read_json(f"{root}/reports/dt={DAY}/monitoring.json")
    assert report["model_version"] == "2026-01-19.1"
    before = day_files(part)
    again = score(root)
    assert again.exit_code == 0, again.output
    assert day_files(part) == before

    # Moved as well: the recorded absolute URI still identifies the same layout.
    moved = tmp_path / "restored"
    shutil.copytree(root, moved)
    shutil.rmtree(root)
    assert score(moved).exit_code == 0
    # A partial run of the old layout finishes under the new one.
    new_part = f"{moved}/predictions/dt={DAY}"
    storage.delete(f"{new_part}/_SUCCESS")
    storage.delete(f"{new_part}/{LEGACY_MANIFEST}")
    storage.delete(f"{new_part}/part-00001-00000.parquet")
    resumed = score(moved)
    assert resumed.exit_code == 0, resumed.output
    assert storage.read_json(f"{new_part}/{layout.MANIFEST}")["rows"] == 700
    assert pq.read_table(new_part).num_rows == 700
