"""Labels at the horizon boundary, and the keyed hash split."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from _training_data import day_ms, event, histories_table
from conftest import make_config

from propensity.training.examples import input_day, is_validation, labels

D = dt.date(2026, 1, 20)
H = 7
START = D - dt.timedelta(days=H)
END_IN = day_ms(START + dt.timedelta(days=1))  # end of D-H: the prediction time
HORIZON_END = END_IN + H * 86_400_000


def test_labels_at_the_horizon_boundary(config):
    assert input_day(config, D) == START
    past = event(END_IN - 3_600_000, "view", 1, 1, 1, 9.0)
    later = {
        "in_at_end": [past, event(HORIZON_END, "order")],  # exactly at the end: in
        "out_after_end": [past, event(HORIZON_END + 1, "order")],  # 1 ms later: out
        "out_at_start": [event(END_IN, "order")],  # at the prediction time itself: out
        "out_before": [event(END_IN - 1, "order")],  # before the prediction time: out
        "in_just_after": [past, event(END_IN + 1, "order")],
        "out_other_type": [past, event(END_IN + 1000, "add_to_cart", 2, 2, 2, 5.0)],
        "absent_later": [past],  # not in histories(D) at all: 0
    }
    inputs = histories_table({pid: [past] for pid in later}, START)
    later.pop("absent_later")
    # The later snapshot holds all of the events (a window far beyond D so none is cut off).
    label_table = histories_table(later, D + dt.timedelta(days=3))
    y = labels(inputs, label_table, config, START)
    got = dict(zip(inputs.column("profile_id").to_pylist(), y[:, 0].tolist()))
    assert got == {
        "in_at_end": 1.0,
        "out_after_end": 0.0,
        "out_at_start": 0.0,
        "out_before": 0.0,
        "in_just_after": 1.0,
        "out_other_type": 0.0,
        "absent_later": 0.0,
    }


def test_several_targets_have_their_own_horizon(tmp_path):
    cfg = make_config(
        tmp_path,
        "targets=[{name: order_7d, event_types: [order], horizon_days: 7},"
        " {name: cart_2d, event_types: [add_to_cart, checkout], horizon_days: 2}]",
    )
    assert cfg.horizon_days == 7
    past = event(END_IN - 10, "view")
    later = {
        "cart_day1": [past, event(END_IN + 86_400_000, "checkout")],
        "cart_day3": [past, event(END_IN + 3 * 86_400_000, "add_to_cart")],
    }
    inputs = histories_table({pid: [past] for pid in later}, START)
    y = labels(inputs, histories_table(later, D), cfg, START)
    assert y.tolist() == [[0.0, 1.0], [0.0, 0.0]]


def test_hash_split_is_stable_and_near_the_share(config):
    ids = pa.array([f"{i:08x}" for i in range(20_000)])
    val = is_validation(ids, config)
    assert abs(val.mean() - config.training.validation_share) < 0.015
    # Stable across days: another table with the same ids in another order and subset.
    order = np.random.default_rng(0).permutation(20_000)[:5000]
    again = is_validation(ids.take(pa.array(order)), config)
    assert np.array_equal(again, val[order])
    # A different salt gives a different split.
    other = make_config(config.storage.root, "training.split_salt=other")
    assert (is_validation(ids, other) != val).mean() > 0.2


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_hash_split_follows_the_configured_share(tmp_path, share):
    cfg = make_config(tmp_path, f"training.validation_share={share}")
    ids = pa.array([f"profile-{i}" for i in range(10_000)])
    assert abs(is_validation(ids, cfg).mean() - share) < 0.02
