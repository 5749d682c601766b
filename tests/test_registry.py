"""Registry: publish, load with sha256 verification, promote and rollback."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import torch
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.errors import BadInput, MissingInput
from propensity.model.network import PropensityModel
from propensity.registry import load_model, store

runner = CliRunner()


def publish_version(cfg, version, decision="approved", seed=0):
    torch.manual_seed(seed)
    model = PropensityModel.from_config(cfg)
    meta = {
        "model": cfg.model.model_dump(),
        "types": cfg.events.types,
        "targets": cfg.target_names,
        "feature_spec": model.spec.to_dict(),
        "training_date": version.split(".")[0],
        "metrics": {"order_7d": {"auroc": 0.7}},
        "gate": {"decision": decision, "reasons": [] if decision == "approved" else ["too low"]},
    }
    store.publish(cfg, version, store.weights_bytes(model), meta, {"stats": 1})
    return model


def test_load_model_round_trip_and_champion_default(config):
    with pytest.raises(MissingInput, match="no champion"):
        load_model(config)
    model = publish_version(config, "2026-01-20.1")
    store.move_champion(config, "2026-01-20.1", "gate", "ci", "first model")
    loaded, meta = load_model(config)
    assert meta["version"] == "2026-01-20.1"
    assert not loaded.training
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_a_version_from_before_session_counts_loads_as_it_was_trained(config):
    """model.json of a version trained before `model.session_counts` existed has no such field
    and weights without the session inputs (nor `deep_on`): it loads without them and scores
    as saved."""
    from propensity.config import load_config

    older = load_config(overrides=[f"storage.root={config.storage.root}",
                                   "model.session_counts=false"])
    torch.manual_seed(0)
    model = PropensityModel.from_config(older)
    state = {k: v for k, v in model.state_dict().items() if k != "deep_on"}
    fields = {k: v for k, v in older.model.model_dump().items() if k != "session_counts"}
    meta = {"model": fields, "types": older.events.types, "targets": older.target_names,
            "feature_spec": model.spec.to_dict(), "training_date": "2026-01-20",
            "metrics": {"order_7d": {"auroc": 0.7}}, "gate": {"decision": "approved"}}
    from safetensors.torch import save

    store.publish(older, "2026-01-20.1", save(state), meta, {"stats": 1})
    loaded, _ = load_model(config, "2026-01-20.1")
    assert loaded.n_sessions == 0 and loaded.deep_on.tolist() == [1.0]
    assert loaded.profile_mean.shape == model.profile_mean.shape

    # As the champion: the default config (session counts on) refuses to warm-start from it,
    # naming the field; with them off it warm-starts.
    from propensity.errors import UsageError
    from propensity.training.run import _starting_point

    meta["architecture"] = {k: v for k, v in model.architecture().items()
                            if k != "session_counts"}
    store.publish(older, "2026-01-21.1", save(state), meta, {"stats": 1})
    store.move_champion(config, "2026-01-21.1", "gate", None, "first")
    with pytest.raises(UsageError, match="session_counts.*--cold"):
        _starting_point(config, cold=False)
    warm, parent, _ = _starting_point(older, cold=False)
    assert parent == "2026-01-21.1" and warm.n_sessions == 0


def test_a_version_from_before_item_shares_loads_as_it_was_trained(tmp_path):
    """A version of a config with a target on items, trained before `model.item_share` existed:
    its model.json has no such field; it loads without the share, its item target's wide part
    reading its item counts as before, and scores as saved. Warm-starting from it is refused
    naming the field, and allowed with the field off."""
    from pathlib import Path

    from safetensors.torch import save

    from propensity.config import load_config
    from propensity.errors import UsageError
    from propensity.training.run import _starting_point

    two = Path(__file__).parents[1] / "configs" / "two-targets.yaml"
    now = load_config(two, overrides=[f"storage.root={tmp_path}"])
    older = load_config(two, overrides=[f"storage.root={tmp_path}", "model.item_share=false"])
    torch.manual_seed(0)
    model = PropensityModel.from_config(older)
    fields = {k: v for k, v in older.model.model_dump().items() if k != "item_share"}
    meta = {"model": fields, "types": older.events.types, "targets": older.target_names,
            "feature_spec": model.spec.to_dict(), "training_date": "2026-01-20",
            "metrics": {t: {"auroc": 0.7} for t in older.target_names},
            "gate": {"decision": "approved"},
            "architecture": {k: v for k, v in model.architecture().items() if k != "item_share"}}
    store.publish(older, "2026-01-20.1", save(model.state_dict()), meta, {"stats": 1})
    loaded, _ = load_model(now, "2026-01-20.1")
    assert loaded.n_shares == 0 and PropensityModel.from_config(now).n_shares == 1
    torch.testing.assert_close(loaded.wide_mask, model.wide_mask)

    store.move_champion(now, "2026-01-20.1", "gate", None, "first")
    with pytest.raises(UsageError, match="item_share.*--cold"):
        _starting_point(now, cold=False)
    warm, parent, _ = _starting_point(older, cold=False)
    assert parent == "2026-01-20.1" and warm.n_shares == 0


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_weights_are_refused_naming_the_file(config, damage):
    publish_version(config, "2026-01-20.1")
    uri = storage.join(store.version_uri(config, "2026-01-20.1"), store.WEIGHTS)
    data = storage.read_bytes(uri)
    data = data[:-100] if damage == "truncate" else data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]
    storage.write_bytes(uri, data)
    with pytest.raises(BadInput, match="weights.safetensors: sha256"):
        load_model(config, "2026-01-20.1")
    result = runner.invoke(
        app, ["models", "show", "2026-01-20.1", "--set", f"storage.root={config.storage.root}"]
    )
    assert result.exit_code == 4
    assert "weights.safetensors: sha256" in result.output


def test_versions_list_only_complete_and_next_version_counts_leftovers(config):
    publish_version(config, "2026-01-20.1")
    # A crashed run left weights but no model.json: not listed, but its name is not reused.
    leftover = storage.join(store.version_uri(config, "2026-01-20.2"), store.WEIGHTS)
    storage.write_bytes(leftover, b"x")
    assert store.version_names(config) == ["2026-01-20.1"]
    assert store.next_version(config, dt.date(2026, 1, 20)) == "2026-01-20.3"


def cli(cfg, *args):
    return runner.invoke(app, ["models", *args, "--set", f"storage.root={cfg.storage.root}"])


def test_rollback_walks_back_the_promotions_and_stops_at_their_start(config):
    """Promoting an old version again, then rolling back: each rollback undoes one promotion,
    newest first, and the walk stops with exit 3 where the history starts (it used to walk
    forward again from the re-promoted version to the newest one)."""
    for i, v in enumerate(["2026-01-18.1", "2026-01-19.1", "2026-01-20.1"]):
        publish_version(config, v, seed=i)
        store.move_champion(config, v, "gate", None, "gate approved")
    assert cli(config, "promote", "2026-01-18.1").exit_code == 0  # an old version again

    walked = []
    for _ in range(3):
        result = cli(config, "rollback")
        assert result.exit_code == 0, result.output
        walked.append(store.champion_version(config))
    assert walked == ["2026-01-20.1", "2026-01-19.1", "2026-01-18.1"]
    moves = len(store.read_champion(config)["history"])
    stop = cli(config, "rollback")
    assert stop.exit_code == 3
    text = " ".join(stop.output.split())
    assert "champion 2026-01-18.1 has no earlier champion to roll back to" in text
    assert "models promote VERSION" in text
    assert store.champion_version(config) == "2026-01-18.1"
    assert len(store.read_champion(config)["history"]) == moves  # the refusal moved nothing

    # A new promotion after the walk is undone by the next rollback, and the stop holds again.
    assert cli(config, "promote", "2026-01-20.1").exit_code == 0
    assert cli(config, "rollback").exit_code == 0
    assert store.champion_version(config) == "2026-01-18.1"
    assert cli(config, "rollback").exit_code == 3


def test_rollback_reads_a_history_written_by_the_old_rule(config):
    """A champion.json whose rollbacks went where the old rule sent them (forward, to the
    newest version) still gives a stack ending at the pointer's version."""
    pointer = {"name": config.model.name, "version": "2026-01-20.1", "history": [
        {"action": "gate", "version": "2026-01-18.1", "from": None},
        {"action": "gate", "version": "2026-01-19.1", "from": "2026-01-18.1"},
        {"action": "gate", "version": "2026-01-20.1", "from": "2026-01-19.1"},
        {"action": "promote", "version": "2026-01-18.1", "from": "2026-01-20.1"},
        {"action": "rollback", "version": "2026-01-20.1", "from": "2026-01-18.1"},
        {"action": "rollback", "version": "2026-01-19.1", "from": "2026-01-20.1"},
        {"action": "rollback", "version": "2026-01-18.1", "from": "2026-01-19.1"},
        {"action": "rollback", "version": "2026-01-20.1", "from": "2026-01-18.1"},  # forward
    ]}
    assert store.champion_stack(pointer) == ["2026-01-20.1"]
    assert store.rollback_target(pointer) is None
    assert store.champion_stack({**pointer, "version": "2026-01-18.1",
                                 "history": pointer["history"][:7]}) == ["2026-01-18.1"]


def test_promote_and_rollback_move_only_the_pointer(config):
    for i, v in enumerate(["2026-01-18.1", "2026-01-19.1", "2026-01-20.1"]):
        publish_version(config, v, seed=i)
        store.move_champion(config, v, "gate", None, "gate approved")
    publish_version(config, "2026-01-21.1", decision="rejected")
    before = {v: store.read_metadata(config, v) for v in store.version_names(config)}

    result = cli(config, "rollback", "--reason", "bad scores", "--by", "alice")
    assert result.exit_code == 0, result.output
    assert store.champion_version(config) == "2026-01-19.1"
    assert cli(config, "rollback").exit_code == 0
    assert store.champion_version(config) == "2026-01-18.1"
    result = cli(config, "rollback")
    assert result.exit_code == 3 and "no earlier champion" in result.output

    result = cli(config, "promote", "2026-01-21.1")
    assert result.exit_code == 2 and "--force" in result.output
    assert store.champion_version(config) == "2026-01-18.1"
    result = cli(config, "promote", "2026-01-21.1", "--force", "--reason", "hotfix", "--by", "bob")
    assert result.exit_code == 0, result.output
    pointer = store.read_champion(config)
    assert pointer["version"] == "2026-01-21.1"
    last = pointer["history"][-1]
    assert (last["action"], last["from"], last["by"], last["reason"]) == (
        "promote", "2026-01-18.1", "bob", "hotfix")
    assert pointer["history"][3]["by"] == "alice"
    assert cli(config, "promote", "2026-02-01.1").exit_code == 3
    # Versions themselves never change.
    assert before == {v: store.read_metadata(config, v) for v in store.version_names(config)}

    result = cli(config, "list")
    assert result.exit_code == 0
    assert "2026-01-21.1" in result.output and "rejected" in result.output
    listed = json.loads(cli(config, "list", "--json").output)
    assert listed["champion"] == "2026-01-21.1" and len(listed["versions"]) == 4


def test_registry_on_s3(s3_bucket, tmp_path):
    from conftest import make_config

    cfg = make_config(tmp_path, f"storage.models=s3://{s3_bucket}/registry")
    model = publish_version(cfg, "2026-01-20.1")
    store.move_champion(cfg, "2026-01-20.1", "gate", "ci", "first")
    loaded, meta = load_model(cfg)
    assert meta["version"] == "2026-01-20.1" and store.version_names(cfg) == ["2026-01-20.1"]
    torch.testing.assert_close(loaded.state_dict()["head.3.bias"], model.state_dict()["head.3.bias"])
    assert store.next_version(cfg, dt.date(2026, 1, 20)) == "2026-01-20.2"


def test_model_of_another_feature_version_is_refused(config):
    publish_version(config, "2026-01-20.1")
    uri = storage.join(store.version_uri(config, "2026-01-20.1"), store.METADATA)
    meta = storage.read_json(uri)
    meta["feature_spec"]["version"] = 0  # encoded by an older feature code
    storage.write_json(uri, meta)
    with pytest.raises(BadInput, match="feature spec version 0"):
        load_model(config, "2026-01-20.1")


def test_weights_that_do_not_fit_the_architecture_are_refused(config):
    publish_version(config, "2026-01-20.1")
    uri = storage.join(store.version_uri(config, "2026-01-20.1"), store.METADATA)
    meta = storage.read_json(uri)
    meta["model"]["hidden_size"] += 1  # the weights no longer fit what model.json describes
    storage.write_json(uri, meta)
    with pytest.raises(BadInput, match="do not fit"):
        load_model(config, "2026-01-20.1")


def _gated_version(cfg, version, parent):
    """A version whose model.json has what training records: data dates, baseline, gate."""
    model = PropensityModel.from_config(cfg)
    pairs = [{"input_date": f"2026-01-1{k}", "label_date": f"2026-01-{17 + k}", "profiles": 900}
             for k in range(3)]
    meta = {
        "model": cfg.model.model_dump(), "types": cfg.events.types, "targets": cfg.target_names,
        "feature_spec": model.spec.to_dict(), "training_date": "2026-01-20",
        "created_at": "2026-01-20T06:00:00+00:00", "code_version": "9.9.9",
        "data": {"input_date": "2026-01-13", "snapshot_pairs": pairs, "train_examples": 2400,
                 "validation_examples": 300, "gate_examples": 280},
        "metrics": {"order_7d": {"auroc": 0.7123, "average_precision": 0.2345}},
        "baseline": {"method": "logistic regression", "metrics": {"order_7d": {"auroc": 0.6811}}},
        "gate": {"decision": "rejected", "reasons": ["AUROC below the champion's by 0.0200"],
                 "champion_version": parent,
                 "comparisons": {"order_7d": {
                     "baseline": {"difference": 0.0312, "interval": [0.01, 0.0524]},
                     "champion": {"difference": -0.02, "interval": [None, 0.001]}}}},
        "parent_version": parent, "warm_start": True,
        "training": {"best_epoch": 1, "epochs_run": 3, "deep_part": {"order_7d": False}},
        "config": {"lots": ["of", "settings"] * 100},
    }
    store.publish(cfg, version, store.weights_bytes(model), meta, {"stats": 1})


def test_show_summarises_a_version_and_json_prints_the_whole_record(config):
    publish_version(config, "2026-01-13.1")
    store.move_champion(config, "2026-01-13.1", "gate", None, "first")
    _gated_version(config, "2026-01-20.1", parent="2026-01-13.1")

    result = cli(config, "show", "2026-01-20.1")
    assert result.exit_code == 0, result.output
    rows, label = {}, None
    for line in result.output.splitlines():  # "│ label │ value │" rows, values wrapped
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 4 and cells[1]:
            label = cells[1]
            rows[label] = cells[2]
        elif len(cells) == 4 and label:
            rows[label] += " " + cells[2]
    assert rows["status"] == "not the champion (2026-01-13.1 is)"
    assert rows["data"] == ("inputs 2026-01-10 .. 2026-01-12, labels 2026-01-17 .. 2026-01-19 "
                            "(3 snapshot pairs)")
    assert rows["examples"] == "2400 train, 300 validation, 280 gate rows"
    assert rows["parent"] == "2026-01-13.1 (warm start)"
    assert rows["gate"] == "rejected AUROC below the champion's by 0.0200"
    assert rows["champion then"] == "2026-01-13.1"
    assert rows["training"] == "kept epoch 1 of 3 epochs run order_7d: deep part off"
    assert rows["order_7d"] == ("AUROC 0.7123, AP 0.2345; baseline AUROC 0.6811 vs baseline: "
                                "+0.0312 [+0.0100, +0.0524] vs champion: -0.0200 [n/a, +0.0010]")
    assert "lots" not in result.output and len(result.output.splitlines()) < 30

    as_json = cli(config, "show", "2026-01-20.1", "--json")
    assert as_json.exit_code == 0, as_json.output
    record = json.loads(as_json.stdout)
    assert record == store.read_metadata(config, "2026-01-20.1")
    assert record["config"]["lots"][:2] == ["of", "settings"]

    missing = cli(config, "show", "2026-01-21.1")
    assert missing.exit_code == 3 and "2026-01-21.1" in missing.output


def test_a_champion_move_waits_for_the_one_in_progress(config):
    """A real `models promote` process started while this test holds the champion lease (a move
    in progress) waits for it, then moves from the pointer that move left, not a stale one."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from propensity import lease

    for i, v in enumerate(["2026-01-20.1", "2026-01-21.1", "2026-01-22.1"]):
        publish_version(config, v, seed=i)
    store.move_champion(config, "2026-01-20.1", "gate", "ci", "first")
    with lease.acquire(config, "champion", config.model.name):
        promoter = subprocess.Popen(
            [Path(sys.executable).with_name("propensity"), "models", "promote", "2026-01-22.1",
             "--set", f"storage.root={config.storage.root}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        time.sleep(8)  # the promoter starts (imports torch) and waits for the lease
        assert promoter.poll() is None, promoter.communicate()[0]
        store._move_champion(config, "2026-01-21.1", "gate", None, "the move in progress")
    out = promoter.communicate(timeout=60)[0]
    assert promoter.returncode == 0, out
    pointer = store.read_champion(config)
    assert [(m["from"], m["version"]) for m in pointer["history"]] == [
        (None, "2026-01-20.1"), ("2026-01-20.1", "2026-01-21.1"), ("2026-01-21.1", "2026-01-22.1")
    ]
