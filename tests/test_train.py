"""Real Lightning training on tiny synthetic histories (CPU): end to end through the CLI,
warm start, the gate, and resuming an interrupted run."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from _training_data import simulate, write_histories_days
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.model.batches import CONTEXT_FEATURES
from propensity.registry import load_model, store
from propensity.training.examples import load_examples
from propensity.training.gate import predict
from propensity.training.run import train

pytestmark = pytest.mark.slow
D = dt.date(2026, 1, 20)
D2 = D + dt.timedelta(days=1)
runner = CliRunner()


@pytest.fixture(scope="module")
def histories(tmp_path_factory):
    """Snapshots for training dates D and D+1 (inputs D-7, D-6), 600 profiles."""
    root = tmp_path_factory.mktemp("histories")
    cfg = make_config(root)
    events = simulate(600, D - dt.timedelta(days=30), D2, seed=11)
    days = [D - dt.timedelta(days=7), D - dt.timedelta(days=6), D, D2]
    write_histories_days(cfg, events, days)
    return cfg.uri("histories")


def settings(tmp_path, histories, *extra):
    return [
        f"storage.root={tmp_path}/data",
        f"storage.histories={histories}",
        f"training.work_dir={tmp_path}/work",
        "training.batch_size=64",
        "training.max_epochs=3",
        "training.warm_epochs=1",
        "model.article_buckets=4096",  # small tables: fewer parameters to update per step
        *extra,
    ]


def cli_train(day, sets, *flags):
    args = ["train", "--date", day.isoformat(), *flags]
    for s in sets:
        args += ["--set", s]
    return runner.invoke(app, args)


class Capture(pl.Callback):
    """Records the weights the fit starts from and those of its last step."""

    def on_fit_start(self, trainer, pl_module):
        self.start = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_end(self, trainer, pl_module):
        self.end = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


class Interrupt(pl.Callback):
    """Fails the run in the middle of the second epoch, like a killed process."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            raise RuntimeError("simulated crash")


def test_train_end_to_end_warm_start_and_gate(tmp_path, histories):
    sets = settings(tmp_path, histories)
    cfg = make_config(tmp_path / "data", *sets[1:])

    # First model: cold (no champion), needs only min_auc.
    result = cli_train(D, sets)
    assert result.exit_code == 0, result.output
    assert "gate APPROVED" in result.output
    first = store.champion_version(cfg)
    assert first == "2026-01-20.1"
    meta = store.read_metadata(cfg, first)
    assert meta["metrics"]["order_7d"]["auroc"] > 0.65
    assert meta["gate"]["decision"] == "approved" and meta["gate"]["champion_auc"] is None
    assert meta["data"]["input_date"] == "2026-01-13" and meta["parent_version"] is None
    assert meta["feature_spec"]["types"] == cfg.events.types
    base = store.version_uri(cfg, first)
    reference = storage.read_json(storage.join(base, "reference.json"))
    assert reference["rows"] == meta["data"]["validation_examples"]
    assert "order_7d" in reference["scores"]
    json.loads(storage.read_bytes(storage.join(base, "model.json")))  # strict JSON
    model, loaded = load_model(cfg)
    assert loaded["version"] == first and model.targets == ["order_7d"]
    # The kept weights carry the per-target choice of the deep part that model.json records.
    assert meta["training"]["deep_part"] == {"order_7d": bool(model.deep_on[0])}
    assert f"deep_part={'on' if model.deep_on[0] else 'off'}" in result.output
    from propensity.model.network import WIDE_C

    assert meta["training"]["wide_part_c"]["order_7d"] in WIDE_C  # chosen on validation rows
    assert not list((tmp_path / "work").iterdir())  # resume state removed once published

    # Second date: warm start from the champion's weights.
    champion_state = model.state_dict()
    capture = Capture()
    meta2 = train(cfg, D2, callbacks=[capture])
    assert meta2["parent_version"] == first and meta2["warm_start"]
    assert meta2["training"]["max_epochs"] == 1
    for name, tensor in champion_state.items():
        if not name.startswith("wide."):  # training.wide_part=fit: refit to D2's rows
            torch.testing.assert_close(capture.start[name], tensor)
    assert not torch.equal(capture.start["wide.weight"], champion_state["wide.weight"])
    warm, _ = load_model(cfg, meta2["version"])
    for name in ("wide.weight", "wide.bias"):  # held at that regression while the rest trained
        torch.testing.assert_close(warm.state_dict()[name], capture.start[name])
    assert not torch.equal(capture.end["head.3.weight"], capture.start["head.3.weight"])
    assert meta2["gate"]["champion_auc"]["order_7d"] == pytest.approx(
        meta2["gate"]["candidate_auc"]["order_7d"], abs=0.1
    )
    second = store.champion_version(cfg)
    assert second == "2026-01-21.1"

    # An architecture change cannot warm-start: exit 2 naming the field and --cold.
    result = cli_train(D2, [*sets, "model.hidden_size=16"])
    assert result.exit_code == 2
    assert "hidden_size" in result.output and "--cold" in result.output
    assert store.champion_version(cfg) == second

    # Gate rejection: version kept with its decision, champion untouched, exit 10.
    pointer = store.read_champion(cfg)
    result = cli_train(
        D2, [*sets, "model.hidden_size=16", "gate.min_auc=0.99", "training.max_epochs=1"], "--cold"
    )
    assert result.exit_code == 10, result.output
    assert "gate REJECTED" in result.output and "min_auc" in result.output
    assert store.read_champion(cfg) == pointer
    rejected = store.read_metadata(cfg, "2026-01-21.2")
    assert rejected["gate"]["decision"] == "rejected"
    assert rejected["parent_version"] is None and not rejected["warm_start"]
    assert rejected["gate"]["champion_version"] == second
    assert rejected["gate"]["champion_auc"]["order_7d"] > 0.6  # champion scored on the same rows

    # Losing to the baseline: rejected with the lift and its interval, champion untouched.
    result = cli_train(D2, [*sets, "gate.min_lift_over_baseline=0.5"], "--cold")
    assert result.exit_code == 10, result.output
    assert "does not beat the baseline" in result.output and "(lift " in result.output
    assert store.read_champion(cfg) == pointer
    lost = store.read_metadata(cfg, "2026-01-21.3")
    assert lost["gate"]["decision"] == "rejected"
    base = lost["baseline"]["metrics"]["order_7d"]["auroc"]
    assert base == pytest.approx(lost["gate"]["baseline_auc"]["order_7d"], abs=1e-6)
    assert lost["gate"]["comparisons"]["order_7d"]["baseline"]["interval"][0] < 0.5
    # `models show`: a summary that leads with the decision and the baseline; --json the record.
    show = ["models", "show", "2026-01-21.3", "--set", sets[0], "--set", sets[1]]
    summary = runner.invoke(app, show)
    assert summary.exit_code == 0, summary.output
    assert "rejected" in summary.output and "does not beat the baseline" in summary.output
    assert f"baseline AUROC {base:.4f}" in summary.output and "vs baseline" in summary.output
    whole = runner.invoke(app, [*show, "--json"])
    assert json.loads(whole.stdout)["gate"] == lost["gate"]


@pytest.mark.parametrize("wide_part", ["fit", "train"])
def test_a_model_trained_on_one_weekday_scores_the_others_on_its_scale(tmp_path, histories,
                                                                        wide_part):
    """On one snapshot pair the weekday of prediction time is constant: a model trained there
    must not read another weekday as thousands of standard deviations (before the std floor,
    such a model scored every other weekday near 0). The wide part stays at its regression
    with `training.wide_part=fit` and trains with `train`."""
    sets = settings(tmp_path, histories, "gate.min_auc=0", "gate.min_lift_over_baseline=-1",
                    f"training.wide_part={wide_part}")
    cfg = make_config(tmp_path / "data", *sets[1:])
    capture = Capture()
    meta = train(cfg, D, cold=True, callbacks=[capture])
    assert len(meta["data"]["snapshot_pairs"]) == 1
    model, _ = load_model(cfg, meta["version"])
    held = torch.equal(capture.end["wide.weight"], capture.start["wide.weight"])
    assert held == (wide_part == "fit")
    examples = load_examples(cfg, D)
    rows = examples.val_rows
    scores = predict(model, examples.encoded, rows, 256)
    first = CONTEXT_FEATURES.index("predict_weekday_0")
    weekday = examples.encoded.context[:, first : first + 7]
    assert (weekday.std(axis=0) == 0).all()  # one weekday on every row
    examples.encoded.context[:, first : first + 7] = np.roll(weekday, 3, axis=1)
    moved = predict(model, examples.encoded, rows, 256)
    logit = np.log(scores / (1 - scores))
    shift = np.abs(np.log(moved / (1 - moved)) - logit)
    assert shift.mean() < 0.2 * logit.std()


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path, histories):
    sets = settings(tmp_path, histories, "training.max_epochs=2", "training.max_examples=300")
    cfg = make_config(tmp_path / "data", *sets[1:])
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, D, callbacks=[Interrupt()])
    assert store.version_names(cfg) == [] and store.champion_version(cfg) is None
    [folder] = list((tmp_path / "work").iterdir())
    assert (folder / "last.ckpt").exists()

    resumed = train(cfg, D)
    assert resumed["training"]["resumed"] and resumed["training"]["epochs_run"] == 2

    ref_cfg = make_config(
        tmp_path / "ref", *[s for s in sets[1:] if not s.startswith("training.work_dir")],
        f"training.work_dir={tmp_path}/ref-work",
    )
    straight = train(ref_cfg, D)
    assert not straight["training"]["resumed"]
    a, _ = load_model(cfg)
    b, _ = load_model(ref_cfg)
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor, rtol=0, atol=0)
    assert resumed["metrics"] == straight["metrics"]


def test_missing_pairs_are_skipped_and_none_at_all_exits_3(tmp_path, histories):
    # Training date D+3: pairs k=0, 1 lack histories(D-4), histories(D-5); pair 2 (inputs D-6,
    # labels D+1) and pair 3 (D-7, D) exist, so the model trains on them and records the skips.
    later = D + dt.timedelta(days=3)
    result = cli_train(later, settings(tmp_path, histories))
    assert result.exit_code == 0, result.output
    meta = store.read_metadata(make_config(tmp_path / "data"), f"{later}.1")
    assert [p["input_date"] for p in meta["data"]["snapshot_pairs"]] == ["2026-01-14", "2026-01-13"]
    assert [s["k"] for s in meta["data"]["skipped_pairs"]][:2] == [0, 1]
    # With only the freshest pair asked for, nothing is usable: exit 3 naming the partition.
    result = cli_train(later, settings(tmp_path, histories, "training.snapshot_pairs=1"))
    assert result.exit_code == 3, result.output
    assert "dt=2026-01-16" in result.output and "no usable snapshot pair" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_training_uses_mixed_precision(tmp_path, histories):
    cfg = make_config(tmp_path / "data", *settings(tmp_path, histories, "training.max_epochs=1")[1:])
    meta = train(cfg, D)
    assert meta["training"]["accelerator"] == "gpu"
    assert meta["training"]["precision"] in ("bf16-mixed", "16-mixed")
    model, _ = load_model(cfg)  # published weights load on CPU
    assert next(model.parameters()).device.type == "cpu"


def test_a_config_with_a_target_on_items_warm_starts_from_its_champion(tmp_path):
    """The item target's predicate and share prior survive model.json and the weights: the next
    date warm-starts from the champion (its prior kept) instead of exiting 2."""
    sets = settings(tmp_path, f"{tmp_path}/data/histories", "gate.min_auc=0",
                    "targets=[{name: order_7d}, {name: shoes_order_7d, categories: [sneakers]}]")
    cfg = make_config(tmp_path / "data", *sets[1:])
    shoes = cfg.targets[1].hashed("categories")[0]
    rng = np.random.default_rng(3)
    events = {pid: [(*e[:4], shoes if rng.random() < 0.4 else e[4], e[5]) for e in evs]
              for pid, evs in simulate(600, D - dt.timedelta(days=30), D2, seed=11).items()}
    write_histories_days(cfg, events, [D - dt.timedelta(days=7), D - dt.timedelta(days=6), D, D2])
    first = train(cfg, D)
    champion, _ = load_model(cfg)
    assert champion.n_shares == 1 and 0.2 < float(champion.item_share_prior) < 0.6
    capture = Capture()
    second = train(cfg, D2, callbacks=[capture])
    assert second["parent_version"] == first["version"] and second["warm_start"]
    assert torch.equal(capture.start["item_share_prior"], champion.item_share_prior)
