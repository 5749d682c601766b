"""The auxiliary loss's per-step labels against a per-event Python oracle, and a real training
that uses them without changing what is published."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch
from _training_data import event, histories_table, simulate
from conftest import make_config

from propensity.model.batches import encode, prediction_time_ms
from propensity.model.network import PropensityModel
from propensity.training.auxiliary import StepTargets, step_loss
from propensity.training.lightning import PropensityTask

DAY = dt.date(2026, 1, 20)
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
TARGETS = ("targets=[{name: order_7d}, "
           "{name: pricey_cart_2d, event_types: [add_to_cart, checkout], horizon_days: 2, "
           "min_price: 30}]")


def oracle(row: dict, target, end_ms: int) -> tuple[list[bool], list[bool]]:
    """(labels, observed) of one history's events for one target, event by event."""
    ts = [int(t.timestamp() * 1000) for t in row["ts"]]
    horizon = target.horizon_days * 24 * HOUR_MS

    def counts(s: int) -> bool:
        price_ok = target.min_price is None or (
            row["price"][s] is not None and row["price"][s] >= target.min_price)
        return row["event_type"][s] in target.event_types and price_ok

    labels = [any(counts(s) and ts[s] - ts[t] <= horizon for s in range(t + 1, len(ts)))
              for t in range(len(ts))]
    observed = [end_ms - ts[t] >= horizon for t in range(len(ts))]
    return labels, observed


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("aux"), TARGETS)
    table = histories_table(simulate(80, DAY - dt.timedelta(days=20), DAY, seed=5), DAY,
                            max_events=60)
    model = PropensityModel.from_config(cfg)
    return cfg, table, model


def test_step_labels_equal_a_per_event_oracle(setting):
    cfg, table, model = setting
    encoded = encode(table, model.spec, DAY)
    batch = encoded.batch(np.arange(len(encoded)))
    labels, observed = StepTargets(cfg.targets, model.spec)(batch)
    end = prediction_time_ms(DAY)
    rows = table.to_pylist()
    positives = 0
    for j, target in enumerate(cfg.targets):
        for b, row in enumerate(rows):
            want_labels, want_observed = oracle(row, target, end)
            n = len(row["ts"])
            assert labels[b, :n, j].bool().tolist() == want_labels, (target.name, b)
            assert observed[b, :n, j].tolist() == want_observed, (target.name, b)
            assert not observed[b, n:, j].any()  # padding is never a label
            positives += sum(lab and obs for lab, obs in zip(want_labels, want_observed))
        # Both targets have positives and negatives among the observed steps (else the test
        # would not tell a label from its absence).
        seen = labels[..., j][observed[..., j]]
        assert 0 < seen.sum() < len(seen), target.name
    assert positives > 0


def test_the_horizon_edge_and_the_last_event(setting):
    """An event a minute inside the horizon after step t counts, a minute beyond does not (the
    encoded gaps are float32 logs: exact to ~0.1 s at a week); a step closer to the prediction
    time than the horizon is not observed."""
    cfg, _, model = setting
    end = prediction_time_ms(DAY)
    horizon = 7 * 24 * HOUR_MS
    first = end - 10 * 24 * HOUR_MS
    events = {
        "edge": [event(first, "view"), event(first + horizon - MINUTE_MS, "order", price=10.0)],
        "late": [event(first, "view"), event(first + horizon + MINUTE_MS, "order", price=10.0)],
    }
    table = histories_table(events, DAY)
    encoded = encode(table, model.spec, DAY)
    labels, observed = StepTargets(cfg.targets, model.spec)(encoded.batch(np.arange(2)))
    by_id = {pid: i for i, pid in enumerate(table.column("profile_id").to_pylist())}
    assert labels[by_id["edge"], 0, 0] == 1
    assert labels[by_id["late"], 0, 0] == 0
    assert observed[by_id["edge"], 0, 0] and not observed[by_id["edge"], 1, 0]


def test_step_loss_reads_only_observed_steps():
    logits = torch.tensor([[[2.0], [-50.0]]])
    labels = torch.tensor([[[1.0], [1.0]]])
    observed = torch.tensor([[[True], [False]]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[0, 0], labels[0, 0])
    assert torch.isclose(step_loss(logits, labels, observed), expected)
    assert step_loss(logits, labels, torch.zeros_like(observed)) == 0


def test_the_task_adds_the_weighted_step_loss_and_trains_its_head(setting):
    cfg, table, model = setting
    encoded = encode(table, model.spec, DAY)
    batch = encoded.batch(np.arange(len(encoded)))
    y = torch.zeros(len(encoded), len(cfg.targets))
    model.eval()  # no dropout: the two losses differ only by the auxiliary term
    plain = PropensityTask(model, 1e-3, 0.0, 7)
    with_aux = PropensityTask(model, 1e-3, 0.0, 7, StepTargets(cfg.targets, model.spec), 0.5)
    for task in (plain, with_aux):
        task.on_train_epoch_start()
    main = plain.training_step((batch, y), 0)
    total = with_aux.training_step((batch, y), 0)
    states = model.hidden_states(model.embed(batch))
    aux = step_loss(with_aux.aux_head(states), *StepTargets(cfg.targets, model.spec)(batch))
    assert aux > 0
    torch.testing.assert_close(total, main + 0.5 * aux)
    total.backward()
    assert with_aux.aux_head.weight.grad.abs().sum() > 0
    assert model.lstm.weight_hh_l0.grad.abs().sum() > 0  # the step labels reach the LSTM
    # The optimizer trains the task's head too, and the model keeps no trace of it.
    trained = {id(p) for group in with_aux.configure_optimizers().param_groups for p in group["params"]}
    assert id(with_aux.aux_head.weight) in trained
    assert not any(k.startswith("aux") for k in model.state_dict())
