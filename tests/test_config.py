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


def test_a_bad_set_value_blames_the_set_item_not_the_file(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text("training:\n  max_epochs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["training.batch_size=lots"])
    message = str(err.value)
    assert message.startswith("--set training.batch_size=lots: invalid config: training.batch_size")
    assert str(path) not in message


def test_an_unknown_set_key_blames_the_set_item():
    # The unknown key is reported at its parent section (spark.driver), which only --set made.
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["spark.driver.memory=512m"])
    assert str(err.value).startswith("--set spark.driver.memory=512m: invalid config: spark.driver")
    assert EMBEDDED not in str(err.value)


def test_an_environment_override_is_named_by_its_variable(monkeypatch):
    monkeypatch.setenv("PROPENSITY__GATE__MIN_AUC", "1.5")
    with pytest.raises(ConfigError) as err:
        load_config()
    assert str(err.value).startswith(
        "environment variable PROPENSITY__GATE__MIN_AUC: invalid config: gate.min_auc"
    )
    assert "1.5" not in str(err.value).split(":")[0]  # the variable is named, its value is not
    # --set of the same key wins, and then it is the --set item that is to blame.
    with pytest.raises(ConfigError, match=r"^--set gate.min_auc=2: invalid config: gate.min_auc"):
        load_config(overrides=["gate.min_auc=2"])


def test_each_problem_is_blamed_on_its_own_source(tmp_path, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hidden_size: huge\n")
    monkeypatch.setenv("PROPENSITY__TRAINING__MAX_EPOCHS", "many")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["gate.min_auc=2"])
    parts = {
        p.split(": invalid config: ")[0]: p
        for p in str(err.value).split("; ")
        if ": invalid config: " in p
    }
    assert set(parts) == {
        str(path),
        "environment variable PROPENSITY__TRAINING__MAX_EPOCHS",
        "--set gate.min_auc=2",
    }
    assert "model.hidden_size" in parts[str(path)]
    assert "training.max_epochs" in parts["environment variable PROPENSITY__TRAINING__MAX_EPOCHS"]
    assert "gate.min_auc" in parts["--set gate.min_auc=2"]


def test_a_whole_section_set_again_takes_the_blame(monkeypatch):
    monkeypatch.setenv("PROPENSITY__TRAINING__MAX_EPOCHS", "3")
    with pytest.raises(ConfigError, match=r"^--set training={batch_size: x}: invalid config"):
        load_config(overrides=["training={batch_size: x}"])


@pytest.mark.parametrize(
    "item, says",
    [
        (
            "gate.min_auc.deep=1",
            (
                "--set gate.min_auc.deep=1: cannot set 'gate.min_auc.deep': "
                "'gate.min_auc' is not a section"
            ),
        ),
        ("gate..min_auc=1", "--set gate..min_auc=1: 'gate..min_auc' is not a key path"),
    ],
)
def test_set_paths_that_cannot_be_set(item, says):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[item])
    assert str(err.value).startswith(says)


def test_an_environment_path_that_cannot_be_set_names_the_variable(monkeypatch):
    monkeypatch.setenv("PROPENSITY__GATE__MIN_AUC__DEEP", "1")
    with pytest.raises(
        ConfigError,
        match=r"^environment variable PROPENSITY__GATE__MIN_AUC__DEEP: "
        r"cannot set",
    ):
        load_config()
