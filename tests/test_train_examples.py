"""Labels at the horizon boundary, and the keyed hash split."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from _training_data import day_ms, event, histories_table, write_histories
from conftest import make_config

from propensity.errors import MissingInput
from propensity.model.labels import labels
from propensity.training.examples import input_day, is_validation, load_examples

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


def test_labels_of_a_type_target_count_the_events_the_cap_cut(tmp_path):
    """An order followed by more than `max_events` events is cut from the later snapshot's
    lists; a target on event types (or a minimum price) still finds it in `older_*`, a target on
    categories cannot (older_* keeps no category)."""
    cfg = make_config(
        tmp_path,
        "targets=[{name: order_7d}, {name: big_order_7d, min_price: 30},"
        " {name: dear_order_7d, min_price: 50}, {name: shoes_7d, categories: [boots]}]",
    )
    boots = cfg.targets[3].hashed("categories")[0]
    past = event(END_IN - 3_600_000, "view", 1, 1, 1, 9.0)
    order = event(END_IN + 60_000, "order", 7, 7, boots, 40.0)
    views = [event(END_IN + 120_000 + i, "view", 1, 1, 1, 9.0) for i in range(5)]
    history = {"heavy": [past, order, *views], "light": [past, order]}
    inputs = histories_table({pid: [past] for pid in history}, START)
    capped = histories_table(history, D, max_events=3, older=True)
    assert capped.column("older_event_type").to_pylist()[0] == ["view", "order", "view", "view"]
    y = labels(inputs, capped, cfg, START)
    assert y.tolist() == [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]]
    # Without the older_* columns (a version-1 snapshot) the cap decides: the order is lost.
    v1 = capped.drop_columns(["older_ts", "older_event_type", "older_price"])
    assert labels(inputs, v1, cfg, START).tolist() == [[0.0, 0.0, 0.0, 0.0],
                                                       [1.0, 1.0, 0.0, 1.0]]


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


def _boundary_events(label_day: dt.date) -> list:
    """A profile's events around the horizon of the pair whose labels mature on `label_day`:
    an order exactly at the horizon's end (in) and one 1 ms after the prediction time (in)."""
    start = day_ms(label_day - dt.timedelta(days=H - 1))  # end of D-k-H
    return [event(start + 1, "order"), event(start + H * 86_400_000, "order")]


def test_examples_from_several_snapshot_pairs_match_a_per_row_oracle(tmp_path):
    """Pairs k = 0..3 of D; each label checked against the events by hand, at the horizon
    boundary for every k; a profile is on the same side of the split in every pair; pair 3 lacks
    its input partition and is skipped with its reason."""
    cfg = make_config(tmp_path, "training.snapshot_pairs=4", "training.min_pair_examples=1",
                      "training.min_pair_positives=0")
    rng = np.random.default_rng(0)
    events: dict[str, list] = {}
    first = D - dt.timedelta(days=H + 3)
    for i in range(80):
        evs = [event(day_ms(first - dt.timedelta(days=1)) + int(rng.integers(0, 86_400_000)),
                     "view")]
        for d in range(H + 4):  # a random order now and then, anywhere in the window
            if rng.random() < 0.15:
                ts = day_ms(first + dt.timedelta(days=d)) + int(rng.integers(0, 86_400_000))
                evs.append(event(ts, "order"))
        if i < 4:  # planted exactly on the boundaries of pair i
            evs += _boundary_events(D - dt.timedelta(days=i))
        events[f"p{i:03d}"] = sorted(evs)
    for k in range(3):  # pairs 0..2 complete; pair 3 would need histories(D-H-3)
        for day in (D - dt.timedelta(days=k), D - dt.timedelta(days=H + k)):
            write_histories(cfg, day, histories_table(events, day))
    write_histories(cfg, D - dt.timedelta(days=3), histories_table(events, D - dt.timedelta(days=3)))

    ex = load_examples(cfg, D)
    assert [p.k for p in ex.pairs] == [0, 1, 2]
    assert [s["k"] for s in ex.skipped] == [3] and "missing" in ex.skipped[0]["reason"]
    assert len(ex.encoded) == sum(p.table.num_rows for p in ex.pairs) == len(ex.labels)
    for p in ex.pairs:
        end = day_ms(p.input_day + dt.timedelta(days=1))
        for row, pid in zip(p.rows, p.table.column("profile_id").to_pylist()):
            want = any(e[1] == "order" and end < e[0] <= end + H * 86_400_000
                       for e in events[pid])
            assert ex.labels[row, 0] == float(want), (p.k, pid)
        planted = p.table.column("profile_id").to_pylist().index(f"p{p.k:03d}")
        assert ex.labels[p.start + planted, 0] == 1.0
    # One side per profile across pairs; the gate's rows are pair 0's validation rows.
    side: dict[str, bool] = {}
    ids = np.concatenate([p.table.column("profile_id").to_numpy(zero_copy_only=False)
                          for p in ex.pairs])
    for row in range(len(ids)):
        is_val = row in set(ex.val_rows)
        assert side.setdefault(ids[row], is_val) == is_val
    assert set(ex.gate_rows) == {r for r in ex.val_rows if r < ex.pairs[0].table.num_rows}
    assert ex.summary()["skipped_pairs"][0]["k"] == 3


def test_no_usable_pair_is_a_clear_missing_input_error(tmp_path):
    cfg = make_config(tmp_path, "training.snapshot_pairs=2")
    with pytest.raises(MissingInput, match="no usable snapshot pair") as err:
        load_examples(cfg, D)
    assert f"dt={D - dt.timedelta(days=H)}" in str(err.value)


def test_item_targets_match_the_hashed_category_brand_and_price(tmp_path):
    from propensity.hashing import xxhash64

    cfg = make_config(
        tmp_path,
        "targets=[{name: order_7d},"
        " {name: sneakers_7d, categories: [sneakers, boots]},"
        " {name: brand_pricey_7d, brands: [b0007], min_price: 50}]",
    )
    sneakers, boots, bags = xxhash64("sneakers"), xxhash64("boots"), xxhash64("bags")
    brand, other_brand = xxhash64("b0007"), xxhash64("b0008")
    past = event(END_IN - 10, "view", 1, brand, sneakers, 60.0)
    at = END_IN + 86_400_000
    later = {
        "sneakers_cheap": [past, event(at, "order", 1, other_brand, sneakers, 10.0)],
        "boots_brand_pricey": [past, event(at, "order", 2, brand, boots, 80.0)],
        "bags_brand_cheap": [past, event(at, "order", 3, brand, bags, 49.99)],
        "sneakers_viewed_only": [past, event(at, "view", 1, brand, sneakers, 60.0)],
        "no_category": [past, event(at, "order", 4, brand, None, 50.0)],
    }
    inputs = histories_table({pid: [past] for pid in later}, START)
    y = labels(inputs, histories_table(later, D), cfg, START)
    got = dict(zip(inputs.column("profile_id").to_pylist(), y.tolist()))
    assert got == {
        "sneakers_cheap": [1.0, 1.0, 0.0],
        "boots_brand_pricey": [1.0, 1.0, 1.0],
        "bags_brand_cheap": [1.0, 0.0, 0.0],  # below min_price
        "sneakers_viewed_only": [0.0, 0.0, 0.0],  # the right item, not an order
        "no_category": [1.0, 0.0, 1.0],  # a null category matches no category list
    }


def test_baseline_adds_item_features_for_an_item_target(tmp_path):
    from propensity.hashing import xxhash64
    from propensity.training import baseline

    cfg = make_config(tmp_path, "targets=[{name: order_7d}, {name: bags_7d, categories: [bags]}]")
    bags, shoes = xxhash64("bags"), xxhash64("sneakers")
    rows = {
        "bag_viewer": [event(END_IN - 3_600_000, "view", 1, 1, bags, 5.0),
                       event(END_IN - 7_200_000, "view", 2, 1, bags, 5.0)],
        "shoe_viewer": [event(END_IN - 3_600_000, "view", 3, 1, shoes, 5.0)],
    }
    table = histories_table(rows, START)
    types = list(cfg.events.types)
    plain, items = cfg.targets
    assert baseline.features(table, START, types, plain).shape[1] == len(
        baseline.feature_names(types, plain))
    X = baseline.features(table, START, types, items)
    names = baseline.feature_names(types, items)
    assert X.shape[1] == len(names) == 2 * len(baseline.feature_names(types))
    order = table.column("profile_id").to_pylist()
    col = names.index("log_items_count_view_all")
    assert X[order.index("bag_viewer"), col] == pytest.approx(np.log1p(2))
    assert X[order.index("shoe_viewer"), col] == 0.0
    # The shared block counts every view of both.
    assert X[order.index("shoe_viewer"), names.index("log_count_view_all")] == pytest.approx(
        np.log1p(1))
