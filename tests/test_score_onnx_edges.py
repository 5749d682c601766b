"""model.onnx of a model with trained magnitudes equals eager on long histories with counters,
including events at the very edge of the counts' time windows; a slightly wrong export fails.

Before `network.age_hours` computed the ages in float64, a model trained on 20k generated
profiles was published without model.onnx (max_abs_diff 2e-3): the generator ends sessions at a
day's last millisecond, so events sit 1 ms past the 1-, 7- and 30-day window edges, and the
float32 ages (off by ~1e-4 hours after summing 200 gaps) counted such an event in one runtime and
not in the other. These histories have such events in every long profile.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from _training_data import DAY_MS, day_ms, event, histories_table
from test_model_counters import with_counters
from test_score_onnx import random_model

from propensity.config import load_config
from propensity.model.batches import encode, length_buckets, prediction_time_ms
from propensity.registry import onnx_export
from propensity.scoring import runtime

DAY = dt.date(2026, 1, 20)
TWO_TARGETS = Path(__file__).resolve().parents[1] / "configs" / "two-targets.yaml"
EDGE_DAYS = (1, 7, 30)  # the windows (model.count_decay_days) whose edges the sessions end at
SESSION_EVENTS = 5
KINDS = ["view", "search", "add_to_cart", "remove_from_cart", "wishlist", "checkout", "order"]


def edge_histories(n: int, categories: list[int], seed: int) -> tuple[pa.Table, np.ndarray]:
    """Histories (with counters) at the end of DAY of `n` profiles, and labels [n, 2] from each
    profile's hidden intent, which also drives its carts and orders. Most profiles have 200
    events in 40 sessions over 180 days; sessions on the days EDGE_DAYS before DAY end at the
    day's last millisecond (as `events.generate` clamps them), the others at a random time.
    Events often look at the session's previous article again (not a fresh article)."""
    rng = np.random.default_rng(seed)
    events: dict[str, list] = {}
    intent = rng.normal(size=n)
    for p in range(n):
        sessions = 40 if p % 4 else int(rng.integers(4, 40))
        others = np.setdiff1d(np.arange(180), EDGE_DAYS)
        days = [*EDGE_DAYS, *rng.choice(others, sessions - len(EDGE_DAYS), replace=False)]
        w = np.exp(intent[p])
        probs = np.array([6.0, 2.0, 1.0 * w, 0.3, 0.4, 0.4 * w, 0.3 * w])
        out, article = [], None
        for back in sorted(days, reverse=True):
            start = day_ms(DAY - dt.timedelta(days=int(back)))
            end = start + DAY_MS - 1 if back in EDGE_DAYS else start + int(rng.integers(0, DAY_MS))
            offsets = np.cumsum(rng.integers(10_000, 600_000, SESSION_EVENTS))[::-1]
            for ts in end - offsets + offsets[-1]:  # the session's last event at `end`
                kind = KINDS[rng.choice(len(KINDS), p=probs / probs.sum())]
                if article is None or rng.random() > 0.4:
                    on_items = rng.random() < 0.3
                    article = (int(rng.integers(0, 1 << 40)), int(rng.integers(0, 50)),
                               int(rng.choice(categories)) if on_items else int(rng.integers(0, 50)),
                               float(rng.lognormal(3.5, 1.0)))
                out.append(event(int(ts), kind, *article))
        events[f"p{p:05d}"] = sorted(out, key=lambda e: e[0])
    labels = rng.random((n, 2)) < 1 / (1 + np.exp(-(-2.0 + 1.5 * intent[:, None])))
    return with_counters(histories_table(events, DAY)), labels.astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model with the magnitudes training gives it: the profile scaler and the wide part from
    the cold start on these histories (`init_profile_part`, as training does), random LSTM and
    deep head (random_model), on the two-targets config (an item target, counters)."""
    cfg = load_config(
        TWO_TARGETS, [f"storage.root={tmp_path_factory.mktemp('data')}", "model.hidden_size=32"]
    )
    model = random_model(cfg)
    table, labels = edge_histories(240, list(model.spec.items[0].category), seed=3)
    enc = encode(table, model.spec, DAY)
    with torch.no_grad():
        inputs = model.profile_inputs(enc.batch(np.arange(len(enc))))
    model.init_profile_part(inputs, torch.from_numpy(labels))
    return model, table, enc


def test_the_histories_are_long_with_counters_and_events_at_window_edges(trained):
    model, table, enc = trained
    assert enc.lengths.max() == 200 and np.mean(enc.lengths == 200) > 0.7
    ages_ms = (
        prediction_time_ms(DAY)
        - table.column("ts").combine_chunks().flatten().cast(pa.int64()).to_numpy()
    )
    assert ages_ms.max() > 175 * DAY_MS  # 200 events over ~180 days
    for days in EDGE_DAYS:  # one event per long profile 1 ms outside each window
        assert np.sum(ages_ms == days * DAY_MS + 1) >= len(table) * 0.7
    assert enc.item_match.mean() > 0.2  # events on the item target's items
    assert np.mean(enc.article[1:] == enc.article[:-1]) > 0.3  # the same article again
    assert model.spec.counters and enc.context.shape[1] > 8 and np.abs(enc.context[:, 8:]).sum()
    # As in trained models: the profile scaler's tiny spreads (rare counts) magnify any
    # difference of the counts by up to 1000, and the wide part is fitted, not random.
    assert float(model.profile_std.min()) < 0.05  # small spreads: they amplify any difference
    assert float(model.wide.weight.detach().abs().max()) > 0.1


def test_onnx_equals_eager_on_long_histories_at_window_edges(trained):
    model, _, enc = trained
    built = onnx_export.build(model, onnx_export.sample_batches(enc, np.arange(len(enc))))
    assert built is not None, "the export was refused (see the log)"
    data, record = built
    assert record["max_abs_diff"] <= onnx_export.TOLERANCE
    onnx = runtime.OnnxScorer(onnx_export.session(data, 1), model.spec, list(model.targets))
    eager = runtime.EagerScorer(model)
    for size in (7, 64, 240):  # several batch widths: the graph's dynamic axes
        for rows in length_buckets(enc.lengths, size):
            batch = enc.batch(rows)
            np.testing.assert_allclose(
                onnx.probabilities(batch),
                eager.probabilities(batch),
                atol=onnx_export.TOLERANCE,
                rtol=0,
            )


def _lstm(model):
    model.lstm.weight_ih_l0.mul_(1.001)


def _scaler(model):
    spread = model.profile_std.masked_fill(model.profile_std == 1.0, 0.0)  # not a constant input
    model.profile_std[int(spread.argmax())] *= 1.001


def _window(model):
    model.count_decay_hours[0] += 1e-3  # the 1-day window 3.6 seconds longer


@pytest.mark.parametrize("perturb", [_lstm, _scaler, _window])
def test_the_check_refuses_a_slightly_wrong_export(trained, perturb):
    """The tolerance is tight enough to refuse a graph of a model that differs by 0.1% in one
    tensor or 3.6 s in one window, which eager on these histories tells apart."""
    model, _, enc = trained
    batches = onnx_export.sample_batches(enc, np.arange(len(enc)))
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        perturb(wrong)
    example = max(batches, key=lambda b: b.event_type.numel())
    sess = onnx_export.session(onnx_export.export_bytes(wrong, example), 1)
    assert onnx_export.max_abs_diff(model, sess, batches) > onnx_export.TOLERANCE
