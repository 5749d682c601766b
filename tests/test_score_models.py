"""Which model scores a day, and what a rerun does with complete predictions: `score` and
`daily --only score` share one decision (kept after a promotion, both versions named), `--rescore`
replaces a day whole, and a past day is scored by the champion as of that day (no look-ahead).

Real registry, real Parquet, the local engine in one process; the CLI through typer's runner.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from _scoring_data import publish_model, write_histories
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.cycle.daily import run_day
from propensity.errors import MissingInput
from propensity.predictions import read_manifest
from propensity.registry import store
from propensity.scoring import layout
from propensity.scoring.run import choose_model, run

DAY = dt.date(2026, 1, 20)
runner = CliRunner()
SETTINGS = ["scoring.workers=1", "scoring.shard_rows=300", "scoring.read_rows=128",
            "scoring.batch_size=64"]  # fmt: skip


def config(root: str):
    return make_config(root, *SETTINGS)


def invoke(cfg, *args):
    """A command with JSON log lines (parsed by `warnings`), on the config's storage root."""
    sets = [a for s in [f"storage.root={cfg.storage.root}", *SETTINGS] for a in ("--set", s)]
    return runner.invoke(app, ["--log-format", "json", *args, *sets])


def warnings(output: str) -> list[str]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [r["message"] for r in lines if r["level"] == "WARNING"]


def partition(cfg, day=DAY) -> str:
    return storage.partition(cfg.uri("predictions"), day)


def versions_read(cfg, day=DAY) -> set[str]:
    return set(storage.read_parquet(partition(cfg, day)).column("model_version").to_pylist())


def test_score_and_daily_keep_a_complete_day_after_a_promotion_alike_and_rescore_replaces_it(
    storage_root, root_handlers
):
    cfg = config(storage_root)
    write_histories(cfg, DAY, 600, files=2, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    run(cfg, DAY)
    publish_model(cfg, "2026-01-20.1", seed=1)  # promoted after the day was scored
    before = storage.list_files(partition(cfg))

    scored = invoke(cfg, "score", "--date", str(DAY))
    daily = invoke(cfg, "daily", "--date", str(DAY), "--only", "score")
    assert scored.exit_code == daily.exit_code == 0, scored.output + daily.output
    (message,) = warnings(scored.output)
    assert warnings(daily.output) == [message]
    assert "2026-01-19.1" in message and "2026-01-20.1" in message and "--rescore" in message
    (record,) = [storage.read_json(u) for u in
                 storage.list_files(storage.join(cfg.uri("reports"), "runs"), suffix=".json")]
    assert record["steps"] == [{**record["steps"][0], "step": "score", "outcome": "skipped",
                                "detail": message}]
    assert record["model_version"] == "2026-01-19.1"
    assert storage.list_files(partition(cfg)) == before  # nothing rewritten
    assert versions_read(cfg) == {"2026-01-19.1"}

    replaced = invoke(cfg, "score", "--date", str(DAY), "--rescore")
    assert replaced.exit_code == 0, replaced.output
    assert versions_read(cfg) == {"2026-01-20.1"}
    manifest = read_manifest(partition(cfg))
    assert manifest["model"]["version"] == "2026-01-20.1" and manifest["rows"] == 600
    assert manifest["replaces"] == {"model_version": "2026-01-19.1"}
    assert manifest["generation"] == 1
    names = {u.rsplit("/", 1)[1] for u in storage.list_files(partition(cfg))}
    assert names == set(manifest["files"]) and all(n.endswith(".r1.parquet") for n in names)
    assert not names & {u.rsplit("/", 1)[1] for u in before}  # no name shared with the old set
    latest = storage.read_json(storage.join(cfg.uri("predictions"), "latest.json"))
    assert latest["model_version"] == "2026-01-20.1"
    assert not storage.exists(layout.replacement(partition(cfg)))
    assert storage.list_partitions(cfg.uri("predictions")) == [DAY]

    # Now both commands find the day complete with the model for it: a quiet no-op.
    again = invoke(cfg, "daily", "--date", str(DAY), "--only", "score")
    assert again.exit_code == 0 and warnings(again.output) == []
    assert invoke(cfg, "score", "--date", str(DAY)).exit_code == 0
    assert read_manifest(partition(cfg))["generation"] == 1
    # `daily --rescore` replaces through the same path (a second replacement: `.r2` files).
    redo = invoke(cfg, "daily", "--date", str(DAY), "--only", "score", "--rescore")
    assert redo.exit_code == 0, redo.output
    assert read_manifest(partition(cfg))["generation"] == 2
    assert all(u.endswith(".r2.parquet") for u in storage.list_files(partition(cfg)))


def test_a_reader_during_a_rescore_sees_the_old_set_or_the_new_one_never_a_mix(tmp_path):
    cfg = config(str(tmp_path / "root"))
    write_histories(cfg, DAY, 900, files=3, row_group_size=100)
    publish_model(cfg, "2026-01-19.1")
    run(cfg, DAY)
    publish_model(cfg, "2026-01-20.1", seed=1)
    seen, errors, done = [], [], threading.Event()

    def read_while_rescoring():
        while not done.is_set():
            try:  # a plain directory read, as downstream readers do
                table = ds.dataset(partition(cfg), format="parquet").to_table()
            except (OSError, ValueError) as e:  # the folder or a file moved away mid-read
                errors.append(type(e).__name__)
                continue
            seen.append((table.num_rows, frozenset(table.column("model_version").to_pylist())))

    reader = threading.Thread(target=read_while_rescoring)
    reader.start()
    try:
        run(cfg, DAY, rescore=True)
    finally:
        done.set()
        reader.join()
    seen.append((900, frozenset(versions_read(cfg))))
    assert {rows for rows, _ in seen} == {900}
    assert {versions for _, versions in seen} <= {frozenset({"2026-01-19.1"}),
                                                  frozenset({"2026-01-20.1"})}
    assert seen[0][1] == {"2026-01-19.1"} and seen[-1][1] == {"2026-01-20.1"}


def test_an_interrupted_replacement_is_finished_by_the_next_run(tmp_path):
    """A replacement complete under _rescore/ whose swap never happened (the run was killed
    between finalizing it and moving it in): the next run of the day puts it in place."""
    cfg = config(str(tmp_path / "root"))
    write_histories(cfg, DAY, 300, files=1, row_group_size=100)
    publish_model(cfg, "2026-01-20.1")
    run(cfg, DAY)
    staging = layout.replacement(partition(cfg))
    Path(staging).parent.mkdir()
    Path(partition(cfg)).rename(staging)
    assert not storage.exists(partition(cfg))
    manifest = run(cfg, DAY)
    assert manifest["model"]["version"] == "2026-01-20.1"
    assert storage.is_complete(partition(cfg)) and not storage.exists(staging)


@pytest.fixture
def two_promotions(tmp_path):
    """Histories for several days and a registry whose champion moved twice: A trained on
    2026-01-10, then B trained on 2026-01-15."""
    cfg = config(str(tmp_path / "root"))
    for day in (dt.date(2026, 1, 9), dt.date(2026, 1, 12), dt.date(2026, 1, 13), DAY):
        write_histories(cfg, day, 200, files=1, row_group_size=100)
    publish_model(cfg, "2026-01-10.1")
    publish_model(cfg, "2026-01-15.1", seed=1)
    return cfg


def test_a_past_day_is_scored_by_the_champion_as_of_that_day(two_promotions, root_handlers):
    cfg = two_promotions
    assert store.champion_as_of(cfg, DAY).version == "2026-01-15.1"
    assert store.champion_as_of(cfg, dt.date(2026, 1, 15)).version == "2026-01-15.1"
    before = store.champion_as_of(cfg, dt.date(2026, 1, 12))
    assert before.version == "2026-01-10.1"
    assert "2026-01-15.1 was trained on 2026-01-15, after 2026-01-12" in before.reason

    day = dt.date(2026, 1, 12)
    result = invoke(cfg, "score", "--date", str(day))
    assert result.exit_code == 0, result.output
    assert versions_read(cfg, day) == {"2026-01-10.1"}
    choice = read_manifest(partition(cfg, day))["model_choice"]
    assert choice == {"version": "2026-01-10.1", "reason": before.reason}
    assert before.reason in result.output  # logged: which model and why
    # Today's champion still scores today (the normal daily run).
    assert run_day(cfg, DAY, only=("score",)).model_version == "2026-01-15.1"
    # A rollback is the newest move: days after B's training date get A again.
    store.rollback(cfg, "tests", "B was bad")
    assert store.champion_as_of(cfg, DAY).version == "2026-01-10.1"


def test_an_explicit_model_wins_and_a_day_before_any_champion_exits_3(two_promotions,
                                                                       root_handlers):
    cfg = two_promotions
    day = dt.date(2026, 1, 13)
    explicit = invoke(cfg, "score", "--date", str(day), "--model", "2026-01-15.1")
    assert explicit.exit_code == 0, explicit.output
    assert versions_read(cfg, day) == {"2026-01-15.1"}
    reason = read_manifest(partition(cfg, day))["model_choice"]["reason"]
    assert reason.startswith("--model 2026-01-15.1") and "look ahead" in reason
    assert any("later model" in w for w in warnings(explicit.output))

    early = dt.date(2026, 1, 9)
    refused = invoke(cfg, "score", "--date", str(early))
    assert refused.exit_code == 3
    text = " ".join(refused.output.split())
    assert "no champion as of 2026-01-09" in text and "--model VERSION" in text
    assert not storage.exists(partition(cfg, early))
    with pytest.raises(MissingInput, match="earliest on 2026-01-10"):
        choose_model(cfg, early)
    # `daily` has nothing to score such a day with: its score step skips, saying why.
    step = run_day(cfg, early, only=("score",)).step("score")
    assert step.outcome == "skipped" and "no champion as of 2026-01-09" in step.detail
    assert invoke(cfg, "score", "--date", str(early), "--model", "2026-01-10.1").exit_code == 0
