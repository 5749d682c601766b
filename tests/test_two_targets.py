"""The example config with two targets (configs/two-targets.yaml: any order in 7 days; an order
of sneakers or boots in 14 days) through `daily` on a generated stream: one model with two heads
is trained and gated per target, predictions carry both columns, the monitoring report covers
both targets."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from propensity import storage
from propensity.config import load_config
from propensity.cycle import stages
from propensity.cycle.daily import run_day
from propensity.monitoring.job import RESULT
from propensity.registry import store

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).parent.parent / "configs" / "two-targets.yaml"
START = dt.date(2026, 1, 5)
INPUT = START + dt.timedelta(days=6)  # histories(D-14): a week of history
DAY = INPUT + dt.timedelta(days=14)  # D: the labels of both targets have matured


def test_two_targets_through_daily(spark, tmp_path):
    from propensity.events.generate import generate_stream

    cfg = load_config(EXAMPLE, overrides=[
        f"storage.root={tmp_path}/data", f"training.work_dir={tmp_path}/work",
        "model.hidden_size=8", "training.max_epochs=1", "training.accelerator=cpu",
        "gate.min_auc=0", "histories.output_files=1", "spark.shuffle_partitions=2",
        # No alert: a week of history on a 3,000-profile stream moves between days by design.
        "monitoring.psi_threshold=100", "monitoring.js_threshold=100",
        "monitoring.ks_threshold=100", "monitoring.null_share_threshold=100",
        "monitoring.auc_drop_threshold=1",
    ])
    assert cfg.target_names == ["order_7d", "shoes_order_14d"] and cfg.horizon_days == 14
    generate_stream(cfg.uri("events"), START, (DAY - START).days + 1, 3000, seed=11,
                    fmt="parquet")
    # The two snapshots the training pair needs, each rebuilt from its raw window; `daily`
    # then finds histories(D) complete, trains, scores and monitors.
    for day in (INPUT, DAY):
        stages.aggregate(cfg, day, mode="full")
    run = run_day(cfg, DAY)
    assert run.exit_code == 0, run
    steps = {s.step: s.outcome for s in run.steps}
    assert steps == {"aggregate": "skipped", "train": "ran", "score": "ran", "monitor": "ran"}

    meta = store.read_metadata(cfg, store.champion_version(cfg))
    assert meta["targets"] == ["order_7d", "shoes_order_14d"]
    assert set(meta["gate"]["candidate_auc"]) == {"order_7d", "shoes_order_14d"}
    assert set(meta["baseline"]["metrics"]) == {"order_7d", "shoes_order_14d"}
    # The category target's predicate is stored as hashes in the model's feature spec.
    (items,) = meta["feature_spec"]["items"]
    assert items["category"] and items["brand"] is None

    predictions = storage.read_parquet(storage.partition(cfg.uri("predictions"), DAY))
    assert {"order_7d", "shoes_order_14d"} <= set(predictions.column_names)
    shoes = predictions.column("shoes_order_14d").to_numpy()
    orders = predictions.column("order_7d").to_numpy()
    assert 0 < shoes.mean() < orders.mean() * 2  # a rarer event than any order, not a copy
    result = storage.read_json(storage.join(storage.partition(cfg.uri("reports"), DAY),
                                            RESULT))
    psi = {c["name"] for c in result["checks"] if c["name"].startswith("score_psi:")}
    assert psi == {"score_psi:order_7d", "score_psi:shoes_order_14d"}
