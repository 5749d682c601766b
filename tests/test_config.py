import re
from pathlib import Path

import pytest

from propensity.config import EMBEDDED, ConfigError, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.target_names
    for name in ("events", "quarantine", "histories", "models", "predictions", "reports"):
        assert cfg.uri(name)


def test_configs_folder_is_not_empty():
    assert {p.name for p in CONFIGS} >= {"local.yaml", "aws.yaml"}


def test_embedded_default_is_local_yaml():
    cfg = load_config()
    assert cfg.source == EMBEDDED
    assert cfg == load_config(CONFIGS[[p.name for p in CONFIGS].index("local.yaml")]).model_copy(
        update={"source": EMBEDDED}
    )
    assert cfg.uri("histories") == "propensity-data/histories"


def test_locations_default_under_root_and_can_be_set_alone():
    cfg = load_config(
        overrides=["storage.root=s3://bucket/prefix/", "storage.events=s3://other/raw"]
    )
    assert cfg.uri("models") == "s3://bucket/prefix/models"
    assert cfg.uri("events") == "s3://other/raw"


def test_set_overrides_parse_yaml_scalars():
    cfg = load_config(overrides=["training.max_epochs=3", "events.vocabulary=[view, order]"])
    assert cfg.training.max_epochs == 3
    assert cfg.events.types == ["other", "view", "order"]


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("PROPENSITY__TRAINING__BATCH_SIZE", "64")
    monkeypatch.setenv("PROPENSITY__GATE__MIN_AUC", "0.7")
    cfg = load_config(overrides=["gate.min_auc=0.8"])
    assert cfg.training.batch_size == 64
    assert cfg.gate.min_auc == 0.8  # --set wins over the environment


def test_config_env_var_selects_the_file(monkeypatch, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  hidden_size: 32\n")
    monkeypatch.setenv("PROPENSITY_CONFIG", str(path))
    assert load_config().model.hidden_size == 32


@pytest.mark.parametrize(
    "text, key",
    [
        ("training:\n  batch_size: many\n", "training.batch_size"),
        ("training:\n  batch_sise: 3\n", "training.batch_sise"),
        ("gate:\n  min_auc: 1.5\n", "gate.min_auc"),
        ("targets:\n  - name: t\n    event_types: [teleport]\n", "targets.t.event_types"),
        ("events:\n  vocabulary: [view, other]\n", "events.vocabulary"),
    ],
)
def test_invalid_config_names_key_and_file(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert key in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_pseudonym_key_from_environment_wins(monkeypatch):
    cfg = load_config()
    monkeypatch.setenv(cfg.privacy.key_env, "from-secret-store")
    assert cfg.pseudonym_key() == b"from-secret-store"


def test_production_config_requires_a_key(monkeypatch):
    cfg = load_config(Path(__file__).parent.parent / "configs" / "aws.yaml")
    monkeypatch.delenv(cfg.privacy.key_env, raising=False)
    with pytest.raises(ConfigError, match=cfg.privacy.key_env):
        cfg.pseudonym_key()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("targets=[{name: a, categories: []}]", "targets.a.categories: an empty list"),
        ("targets=[{name: a, brands: [x, x]}]", "targets.a.brands: duplicate values"),
        ("targets=[{name: a, event_types: [nope]}]", "targets.a.event_types: ['nope'] not in"),
        ("targets=[{name: a, event_types: []}]", "targets.a.event_types: must name"),
        ("targets=[{name: a}, {name: a}]", "duplicate names"),
        ("targets=[{name: a, min_price: -1}]", "min_price"),
    ],
)
def test_bad_targets_are_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=[override])
