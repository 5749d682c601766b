"""Targets on items: a model with two heads (any order; an order of a category) trained by the
trainer's own code on planted histories where each profile leans towards one category and
orders mostly from it. The category head must learn the ids (well above 0.5), predictions carry
both columns, and explanations of the category head credit the events of that category."""

from __future__ import annotations

import datetime as dt

import _explain_data as data
import numpy as np
import pyarrow.parquet as pq
import pytest
from _training_data import DAY_MS, day_ms, event
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.explain.profile import explain_ids
from propensity.hashing import xxhash64
from propensity.pseudonym import pseudonymise
from propensity.registry import store
from propensity.training.run import train

pytestmark = pytest.mark.slow
CATEGORIES = ["bags", "hats", "coats", "sneakers"]
TARGETS = ("targets=[{name: order_7d, event_types: [order], horizon_days: 7},"
           " {name: bags_7d, event_types: [order], horizon_days: 7, categories: [bags]}]")
MIXED = "planted-RAW-ID-mixed"  # as many bag events as hat events
runner = CliRunner()


def _item(rng, ts: int, kind: str, category: str):
    return event(ts, kind, int(rng.integers(0, 2**40)), int(rng.integers(0, 30)),
                 xxhash64(category), 30.0)


def simulate(n_profiles: int, seed: int = 0) -> dict[str, list]:
    """Events per raw id: views and carts mostly in the profile's favourite category; half the
    profiles order within the horizon, 90% of orders in the favourite category."""
    rng = np.random.default_rng(seed)
    start = day_ms(data.INPUT_DAY - dt.timedelta(days=10))
    window = day_ms(data.INPUT_DAY + dt.timedelta(days=1)) - start
    out = {}
    for p in range(n_profiles):
        favourite = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        times = np.sort(start + rng.integers(0, window, size=int(rng.integers(4, 12))))
        events = []
        for t in times:
            cat = favourite if rng.random() < 0.8 else CATEGORIES[int(rng.integers(4))]
            events.append(_item(rng, int(t), "view" if rng.random() < 0.7 else "add_to_cart", cat))
        if rng.random() < 0.5:
            cat = favourite if rng.random() < 0.9 else CATEGORIES[int(rng.integers(4))]
            later = day_ms(data.INPUT_DAY + dt.timedelta(days=int(rng.integers(1, 7))))
            events.append(_item(rng, later + int(rng.integers(0, DAY_MS)), "order", cat))
        out[data.raw_id(p)] = events
    mixed_start = day_ms(data.INPUT_DAY - dt.timedelta(days=3))
    out[MIXED] = [_item(rng, mixed_start + i * 3_600_000, "view", c)
                  for i, c in enumerate(["bags", "hats"] * 6)]
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("items")
    storage_set = f"storage.root={root}/data"
    cfg = make_config(root / "data", TARGETS, *data.SETTINGS, f"training.work_dir={root}/work",
                      "gate.min_auc=0")
    data.write(cfg, simulate(800, seed=5))
    meta = train(cfg, data.TRAIN_DAY)
    # The training examples' own day, before the model's training date: named explicitly (the
    # champion as of that day would be none).
    result = runner.invoke(app, ["score", "--date", data.INPUT_DAY.isoformat(), "--model",
                                 meta["version"], "--set", storage_set, "--set", TARGETS])
    assert result.exit_code == 0, result.output
    return cfg, meta


def test_the_category_head_learns_the_ids(world):
    cfg, meta = world
    assert store.champion_version(cfg) == meta["version"]
    auc = meta["gate"]["candidate_auc"]
    # The profiles' favourite category decides bags_7d; whether one orders at all is a coin.
    assert auc["bags_7d"] > 0.8, auc
    assert abs(auc["order_7d"] - 0.5) < 0.15, auc
    # The baseline sees the bag counts too (its item block): it learns the target as well.
    assert "log_items_count_view_all" in meta["baseline"]["features"]["bags_7d"]
    assert "log_items_count_view_all" not in meta["baseline"]["features"]["order_7d"]


def test_predictions_carry_one_column_per_target(world):
    cfg, _ = world
    part = storage.partition(cfg.uri("predictions"), data.INPUT_DAY)
    table = pq.read_table(storage.parquet_files(part))
    assert {"order_7d", "bags_7d"} <= set(table.column_names)
    bags = table.column("bags_7d").to_numpy()
    assert ((bags > 0) & (bags < 1)).all()


def test_the_category_head_is_explained_by_events_of_its_category(world):
    cfg, _ = world
    (mixed,) = explain_ids(cfg, data.INPUT_DAY, pseudonymise([MIXED], cfg.pseudonym_key()),
                           target="bags_7d", with_leave_one_out=False)
    by_category = {c: 0.0 for c in ("bags", "hats")}
    for e in mixed["events"]:
        name = "bags" if e["category"] == xxhash64("bags") else "hats"
        by_category[name] += e["contribution"]
    assert by_category["bags"] > 0 and by_category["bags"] > by_category["hats"] + 0.05, by_category
