"""Each target keeps its deep part only where it lowers that target's validation loss
(`training.lightning.gated_loss`), and the model applies that choice in every forward path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch
from _training_data import histories_table, simulate
from conftest import make_config
from safetensors.torch import load, save

from propensity.config import load_config
from propensity.model.batches import FeatureSpec, encode
from propensity.model.network import PropensityModel
from propensity.training.lightning import gated_loss, validation_loss

DAY = dt.date(2026, 1, 20)
TWO_TARGETS = Path(__file__).resolve().parents[1] / "configs" / "two-targets.yaml"
bce = torch.nn.functional.binary_cross_entropy_with_logits


@pytest.fixture
def two_targets(tmp_path):
    cfg = load_config(TWO_TARGETS, overrides=[f"storage.root={tmp_path}/data"])
    assert cfg.target_names == ["order_7d", "shoes_order_14d"]
    return cfg


def model_and_batch(cfg, seed=0):
    """A model whose deep head moves the logits (its last layer starts at zero) and a batch."""
    torch.manual_seed(seed)
    model = PropensityModel.from_config(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.head[-1].weight, std=0.5)
        torch.nn.init.normal_(model.head[-1].bias, std=0.5)
    table = histories_table(simulate(40, DAY - dt.timedelta(days=10), DAY, seed=seed + 1), DAY)
    enc = encode(table, FeatureSpec.from_config(cfg), DAY)
    return model, enc.batch(np.arange(len(enc)))


def test_the_deep_part_is_kept_for_the_target_it_helps_and_dropped_for_the_one_it_hurts(two_targets):
    model, _ = model_and_batch(two_targets)
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.random((2000, 2)) < 0.3).float()
    wide = torch.from_numpy(rng.normal(0, 0.3, (2000, 2))).float()
    sign = 2 * y - 1
    deep = torch.stack([1.5 * sign[:, 0], -1.5 * sign[:, 1]], dim=1)  # helps 0, hurts 1

    loss, logits = gated_loss(model, wide, deep, y)

    assert model.deep_on.tolist() == [1.0, 0.0]
    torch.testing.assert_close(logits[:, 0], wide[:, 0] + deep[:, 0])
    torch.testing.assert_close(logits[:, 1], wide[:, 1])
    want = (bce(wide[:, 0] + deep[:, 0], y[:, 0]) + bce(wide[:, 1], y[:, 1])) / 2
    torch.testing.assert_close(loss, want)
    # Both hurt: the wide part alone for both, at the wide part's loss.
    loss, _ = gated_loss(model, wide, -deep.abs() * sign, y)
    assert model.deep_on.tolist() == [0.0, 0.0]
    torch.testing.assert_close(loss, bce(wide, y))


def test_every_forward_path_applies_the_gate_and_the_weights_carry_it(two_targets):
    model, batch = model_and_batch(two_targets)
    with torch.no_grad():
        wide, deep = model.wide_and_deep(batch)
        assert float(deep.abs().min()) > 0  # the deep part moves both targets' logits
        torch.testing.assert_close(model(batch), wide + deep)  # on for both by default
        model.deep_on.copy_(torch.tensor([0.0, 1.0]))
        gated = model(batch)
        torch.testing.assert_close(gated[:, 0], wide[:, 0])
        torch.testing.assert_close(gated[:, 1], wide[:, 1] + deep[:, 1])
        running = model.running_logits(batch)
        torch.testing.assert_close(running[torch.arange(len(gated)), batch.lengths - 1], gated)

    state = load(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    again = PropensityModel.from_config(two_targets).eval()
    again.load_state_dict(state, strict=True)
    assert again.deep_on.tolist() == [0.0, 1.0]
    with torch.no_grad():
        torch.testing.assert_close(again(batch), gated)

    # Weights saved before the gate existed load with the deep part on for every target.
    del state["deep_on"]
    older = PropensityModel.from_config(two_targets).eval()
    older.deep_on.zero_()
    older.load_state_dict(state, strict=True)
    assert older.deep_on.tolist() == [1.0, 1.0]


def test_the_starting_point_is_validated_with_the_gate(two_targets):
    """`validation_loss` (the starting point's score in `fit`) chooses the gate too, and reports
    the loss of what it chose: never above the wide part's alone."""
    model, batch = model_and_batch(two_targets, seed=3)
    with torch.no_grad():
        wide, _ = model.wide_and_deep(batch)
    y = torch.from_numpy(np.random.default_rng(1).random(wide.shape) < 0.4).float()
    loss, fields = validation_loss(model, [(batch, y)])
    assert loss <= float(bce(wide, y)) + 1e-6
    assert {fields["deep_order_7d"], fields["deep_shoes_order_14d"]} <= {"on", "off"}
    assert fields["deep_order_7d"] == ("on" if model.deep_on[0] else "off")


def test_a_model_without_a_wide_part_keeps_its_deep_part(tmp_path):
    cfg = make_config(tmp_path / "data", "model.wide=false")
    model = PropensityModel.from_config(cfg)
    y = torch.ones(10, 1)
    deep = -torch.ones(10, 1)  # hurts, but there is nothing to fall back on
    loss, logits = gated_loss(model, torch.zeros(10, 1), deep, y)
    torch.testing.assert_close(logits, deep)
    torch.testing.assert_close(loss, bce(deep, y))
    assert "deep_on" not in model.state_dict()


def test_the_onnx_export_applies_the_gate(two_targets):
    """Scoring workers run the ONNX graph: a target whose deep part is off scores as its wide
    part alone there too, the other with its deep part."""
    from _scoring_data import make_histories
    from test_score_onnx import batches_of, random_model

    from propensity.registry import onnx_export
    from propensity.scoring import runtime

    model = random_model(two_targets)
    model.deep_on.copy_(torch.tensor([0.0, 1.0]))
    sample = encode(make_histories(600, DAY, two_targets, seed=1), model.spec, DAY)
    batches = batches_of(sample, 256, 0.3, seed=1)
    data, _ = onnx_export.build(model, batches)
    onnx = runtime.OnnxScorer(onnx_export.session(data, 1), model.spec, list(model.targets))
    for batch in batches:
        with torch.no_grad():
            wide, deep = model.wide_and_deep(batch)
            full = torch.sigmoid(wide + deep).numpy()
            wide = torch.sigmoid(wide).numpy()
        scores = onnx.probabilities(batch)
        np.testing.assert_allclose(scores[:, 0], wide[:, 0], atol=1e-5)
        np.testing.assert_allclose(scores[:, 1], full[:, 1], atol=1e-5)
        assert np.abs(full[:, 0] - wide[:, 0]).max() > 1e-3  # the gate really changed target 0
