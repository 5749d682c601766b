"""The one typed configuration of propensity, loaded from YAML.

Precedence, lowest first: the YAML file (`--config`, else `$PROPENSITY_CONFIG`, else the embedded
`configs/local.yaml`), environment variables `PROPENSITY__SECTION__KEY=value`, then
`--set section.key=value` options. Values given as text are parsed as YAML scalars, so
`--set training.max_epochs=3` gives an int and `--set events.vocabulary=[view,order]` a list.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from propensity.errors import ExitCode, PropensityError
from propensity.hashing import xxhash64

CONFIG_ENV = "PROPENSITY_CONFIG"
ENV_PREFIX = "PROPENSITY__"
EMBEDDED = "embedded:local.yaml"


class ConfigError(PropensityError, ValueError):
    """A configuration that cannot be loaded; the message names the file and the key."""

    exit_code = ExitCode.USAGE


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Section):
    root: str = "propensity-data"  # parent of every location below that is not set on its own
    events: str | None = None
    quarantine: str | None = None
    histories: str | None = None
    models: str | None = None
    predictions: str | None = None
    reports: str | None = None

    def uri(self, name: str) -> str:
        """The URI of one location: its own setting, else `<root>/<name>`."""
        own = getattr(self, name)
        if own:
            return own.rstrip("/")
        return f"{self.root.rstrip('/')}/{name}"


class EventFields(_Section):
    """Names of the raw event fields in the shop's tracking stream."""

    event_id: str = "event_id"
    profile_id: str = "profile_id"
    ts: str = "ts"
    event_type: str = "event_type"
    article_id: str = "article_id"
    brand: str = "brand"
    category: str = "category"
    price: str = "price"


DEFAULT_VOCABULARY = [
    "view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "wishlist",
    "checkout",
    "order",
    "return",
]


class EventsConfig(_Section):
    fields: EventFields = EventFields()
    vocabulary: list[str] = Field(default_factory=lambda: list(DEFAULT_VOCABULARY))
    max_bad_share: float = Field(0.05, ge=0, le=1)  # fail the day above this share of bad records
    future_tolerance_hours: float = Field(24, ge=0)  # later timestamps are quarantined
    max_field_chars: int = Field(512, gt=0)  # longer string fields are quarantined
    max_price: float = Field(1_000_000, gt=0)

    @field_validator("vocabulary")
    @classmethod
    def _vocabulary_ok(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one event type")
        if len(set(v)) != len(v):
            raise ValueError("has duplicate event types")
        if "other" in v:
            raise ValueError("must not contain 'other': unknown types map to it")
        return v

    @property
    def types(self) -> list[str]:
        """Event-type codes in order: index 0 is `other`, then the vocabulary."""
        return ["other", *self.vocabulary]


class HistoriesConfig(_Section):
    max_events: int = Field(200, gt=0)  # last N events kept per profile
    retention_days: int = Field(180, gt=0)  # events older than this (relative to D) are dropped
    output_files: int = Field(4, gt=0)  # at most this many Parquet files per snapshot (no shuffle)
    broadcast_max_events: int = Field(5_000_000, ge=0)  # broadcast the day's events up to this


class PrivacyConfig(_Section):
    key_env: str = "PROPENSITY_PSEUDONYM_KEY"  # environment variable holding the hashing key
    # Only for the local default: a key that is public and therefore protects nothing.
    dev_key: str | None = None


# Item predicates of a target, each matched against the history column of the same meaning.
ITEM_FIELDS = {"articles": "article", "brands": "brand", "categories": "category"}


class TargetConfig(_Section):
    """A target: the profile has an event of one of `event_types` within `horizon_days` after
    the prediction time, and, where given, on an article of the listed raw ids, brands or
    categories (values as the tracking stream sends them) at a price of at least `min_price`."""

    name: str  # the prediction column
    event_types: list[str] = Field(default_factory=lambda: ["order"])
    horizon_days: int = Field(7, gt=0)
    articles: list[str] | None = None
    brands: list[str] | None = None
    categories: list[str] | None = None
    min_price: float | None = Field(None, ge=0)

    def hashed(self, field: str) -> list[int] | None:
        """The raw values of an item predicate hashed as the histories store them (Spark's
        xxhash64), so scoring and labelling need no catalogue; None when the field is not set."""
        values = getattr(self, field)
        return None if values is None else [xxhash64(v) for v in values]

    @property
    def on_items(self) -> bool:
        """Whether the target restricts the items, not only the event types."""
        return self.min_price is not None or any(getattr(self, f) for f in ITEM_FIELDS)


class ModelConfig(_Section):
    name: str = "propensity"  # registry name: models/<name>/
    hidden_size: int = Field(64, gt=0)
    type_dim: int = Field(8, gt=0)
    # Hash-bucket tables kept small: larger ones overfit (docs/train.md, "Quality and speed").
    article_buckets: int = Field(1 << 10, gt=0)
    article_dim: int = Field(4, gt=0)
    brand_buckets: int = Field(1 << 8, gt=0)
    brand_dim: int = Field(4, gt=0)
    category_buckets: int = Field(1 << 8, gt=0)
    category_dim: int = Field(4, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    # Time constants (days) of the decayed event counts per type that the head reads beside the
    # LSTM state (recency-weighted frequency, as RFM models use); [] = the LSTM state alone.
    count_decay_days: tuple[float, ...] = (1.0, 7.0, 30.0, 365.0)
    wide: bool = True  # a linear path from the counts and context to the logits (Wide & Deep)
    counters: bool = True  # the histories' window counters as profile context (docs/train.md)
    # Sessions (events more than 30 min after the previous) within each count span, beside
    # the counts: the wide part of a target on event types reads them (docs/train.md).
    session_counts: bool = True
    # Per target on items, its smoothed share of the distinct articles a history shows, read by
    # that target's wide part in place of its item counts (docs/train.md, "Item shares").
    item_share: bool = True

    @field_validator("count_decay_days")
    @classmethod
    def _positive_decays(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(d <= 0 for d in v):
            raise ValueError("every decay time constant must be > 0 days")
        return v


class TrainingConfig(_Section):
    seed: int = 7
    max_epochs: int = Field(12, gt=0)  # cold start
    warm_epochs: int = Field(3, gt=0)  # warm start from the champion
    batch_size: int = Field(128, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)  # AdamW decoupled weight decay
    validation_share: float = Field(0.2, gt=0, lt=1)
    early_stopping_patience: int = Field(3, ge=0)  # epochs without a lower val loss
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    max_examples: int | None = None  # sample cap per run, None = all
    # Snapshot pairs (histories(D-H-k), labels from histories(D-k)) for k = 0..n-1, where they
    # exist: more cut points and every weekday (docs/train.md, "Quality").
    snapshot_pairs: int = Field(7, gt=0)
    min_pair_examples: int = Field(50, ge=1)  # a pair with fewer profiles is skipped
    min_pair_positives: int = Field(5, ge=0)  # a pair with fewer positives (any target) is skipped
    num_workers: int = Field(0, ge=0)
    # torch intra-op threads while training, 0 = torch's default (one per core). On a small
    # model or a shared machine 1 is much faster: spinning OpenMP threads (docs/train.md).
    threads: int = Field(0, ge=0)
    # auto: bf16-mixed (else 16-mixed) on CUDA, 32-true on CPU
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    gradient_clip: float = Field(1.0, ge=0)  # max gradient norm, 0 = no clipping
    # The wide part (model.wide): "fit" = every run (cold or warm) fits it as a logistic
    # regression on its own training rows and holds it fixed while the rest trains on what it
    # misses; "train" = trained with the rest from that fit (AdamW's steps then walk it off the
    # regression's optimum: docs/train.md, "Quality").
    wide_part: Literal["fit", "train"] = "fit"
    bucket_window: int = Field(64, gt=0)  # batches per length-sorted window (more: less padding)
    split_salt: str = "propensity-split-v1"  # key of the validation hash split; changing it reshuffles
    work_dir: str | None = None  # local resumable checkpoints; None = ~/.cache/propensity/train


class GateConfig(_Section):
    min_auc: float = Field(0.6, ge=0, le=1)  # every target's validation AUROC at least this
    # AUROC the candidate must gain over the logistic-regression baseline on the same rows.
    min_lift_over_baseline: float = Field(0.0, ge=-1, le=1)
    max_auc_drop: float = Field(0.01, ge=0, le=1)  # tolerated drop against the champion ...
    significance: float = Field(0.05, gt=0, lt=1)  # ... unless a paired test says it is real


class ScoringConfig(_Section):
    batch_size: int = Field(1024, gt=0)
    # Local worker processes; 0 = as many as the machine's cores and the runtime call for
    # (`scoring.run.AUTO_PLAN`).
    workers: int = Field(0, ge=0)
    engine: Literal["local", "spark"] = "local"
    # onnx = the version's model.onnx in ONNX Runtime; eager = PyTorch; auto = onnx where the
    # version has it and onnxruntime imports, else eager.
    runtime: Literal["auto", "onnx", "eager"] = "auto"
    read_rows: int = Field(32_768, gt=0)  # histories per record batch read (bounds memory)
    shard_rows: int = Field(1_000_000, gt=0)  # rows per shard (whole row groups): unit of resume
    # Model threads (torch or ONNX Runtime intra-op) per scoring process; 0 = as
    # `scoring.run.AUTO_PLAN` says with workers 0, else the cores left after one per process for
    # its reader.
    threads: int = Field(0, ge=0)


class MonitoringConfig(_Section):
    psi_threshold: float = Field(0.2, gt=0)  # population stability index on binned scores
    js_threshold: float = Field(0.1, gt=0)  # Jensen-Shannon distance of categorical mixes
    ks_threshold: float = Field(0.15, gt=0)  # Kolmogorov-Smirnov statistic of numeric inputs
    auc_drop_threshold: float = Field(0.05, gt=0)  # realised vs validation AUC
    trend_days: int = Field(14, gt=0)
    null_share_threshold: float = Field(0.1, gt=0)  # absolute change of a field's null share
    # A check fails only beyond the level its samples' noise reaches this rarely under no drift
    # (and beyond its practical threshold): a small reference widens that level.
    significance: float = Field(0.001, gt=0, lt=1)
    score_bins: int = Field(10, ge=2)  # PSI bins, at the reference's score quantiles
    type_ratio_threshold: float = Field(2.0, gt=1)  # factor of change of a type's share today
    outage_ratio: float = Field(0.1, gt=0, lt=1)  # a type below this share of its usual: stopped
    quarantine_share_threshold: float = Field(0.05, gt=0)  # quarantined / records read on D
    unknown_type_share_threshold: float = Field(0.1, gt=0)  # unknown event types / valid records
    # Factor of change of today's active profiles, events per profile and median price.
    scale_ratio_threshold: float = Field(3.0, gt=1)
    # Whether drifted histories inputs (KS, event-type mix, null shares of the histories) raise
    # the drift alert. Off: they are reported as drifted for diagnosis, and alerts come from
    # what matters downstream: the scores, today's events, data quality and realised quality
    # (a young shop's histories grow longer every day without anything being wrong).
    alert_on_input_drift: bool = False
    # Profiles sampled for the report's global attribution summary (explain); 0 = none.
    attribution_profiles: int = Field(0, ge=0)


class EmrConfig(_Section):
    """How `propensity emr submit` runs the daily cycle's steps on a cluster."""

    # Docker image (Dockerfile.gpu) the training step runs in on the primary node; None = run
    # `propensity` installed on the node itself (a GPU primary instance type).
    train_image: str | None = None
    poll_seconds: float = Field(30, gt=0)  # how often `emr submit --wait` asks for step states
    timeout_minutes: float = Field(360, gt=0)  # `--wait` gives up after this long


class ScheduleConfig(_Section):
    # Weekdays (0 = Monday) on which `daily` retrains; every day when empty.
    train_weekdays: list[int] = Field(default_factory=list)
    # Also retrain when the previous day's monitoring report asked for it.
    retrain_on_drift: bool = True
    emr: EmrConfig = EmrConfig()

    @field_validator("train_weekdays")
    @classmethod
    def _weekdays_ok(cls, v: list[int]) -> list[int]:
        if any(d < 0 or d > 6 for d in v):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return v


class SparkConfig(_Section):
    master: str = "local[*]"
    shuffle_partitions: int = Field(4, gt=0)
    driver_memory: str = "2g"
    conf: dict[str, str] = Field(default_factory=dict)


class LeaseConfig(_Section):
    # A lease whose holder has not renewed it for this long is taken over by the next run (the
    # holder renews every quarter of it, so only a dead or hung run goes stale).
    stale_after_s: float = Field(600, gt=0)

    @property
    def renew_every_s(self) -> float:
        return self.stale_after_s / 4


class Config(_Section):
    storage: StorageConfig = StorageConfig()
    events: EventsConfig = EventsConfig()
    histories: HistoriesConfig = HistoriesConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    targets: list[TargetConfig] = Field(default_factory=lambda: [TargetConfig(name="order_7d")])
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    gate: GateConfig = GateConfig()
    scoring: ScoringConfig = ScoringConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    spark: SparkConfig = SparkConfig()
    lease: LeaseConfig = LeaseConfig()
    source: str = Field(EMBEDDED, exclude=True)  # where it was loaded from, for messages

    @field_validator("targets")
    @classmethod
    def _targets_ok(cls, targets: list[TargetConfig], info: ValidationInfo) -> list[TargetConfig]:
        names = [t.name for t in targets]
        if not names:
            raise ValueError("at least one target is required")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate names in {names}")
        events = info.data.get("events")  # absent when it failed to validate itself
        known = set(events.vocabulary if events else DEFAULT_VOCABULARY)
        for t in targets:
            if not t.event_types:
                raise ValueError(f"targets.{t.name}.event_types: must name at least one type")
            unknown = sorted(set(t.event_types) - known)
            if unknown:
                raise ValueError(f"targets.{t.name}.event_types: {unknown} not in events.vocabulary")
            for field in ITEM_FIELDS:
                values = getattr(t, field)
                if values is not None and not values:
                    raise ValueError(f"targets.{t.name}.{field}: an empty list matches nothing; "
                                     "leave the key out to match every value")
                if values is not None and len(set(values)) != len(values):
                    raise ValueError(f"targets.{t.name}.{field}: duplicate values")
        return targets

    @property
    def horizon_days(self) -> int:
        """H: labels of a snapshot mature H days later (the longest target horizon)."""
        return max(t.horizon_days for t in self.targets)

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    def uri(self, name: str) -> str:
        return self.storage.uri(name)

    def pseudonym_key(self) -> bytes:
        """The keyed-hash key: from the environment, else the config's development key."""
        key = os.environ.get(self.privacy.key_env)
        if key:
            return key.encode()
        if self.privacy.dev_key:
            return self.privacy.dev_key.encode()
        raise ConfigError(
            f"{self.source}: no pseudonymisation key: set ${self.privacy.key_env} "
            "(privacy.dev_key is only for local development)"
        )


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set_path(tree: dict, dotted: str, value: Any, source: str) -> tuple[str, ...]:
    """Set one dotted key in the raw config tree; returns the key path. `source` (the --set
    item or the environment variable) is what an error blames."""
    keys = tuple(k.strip() for k in dotted.split("."))
    if not all(keys):
        raise ConfigError(f"{source}: {dotted!r} is not a key path such as training.max_epochs")
    node = tree
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError(f"{source}: cannot set {dotted!r}: {where!r} is not a section")
        node = child
    node[keys[-1]] = value
    return keys


def _env_overrides() -> list[tuple[str, str, str]]:
    """(dotted key, value, variable name) of every PROPENSITY__SECTION__KEY variable."""
    out = []
    for name, value in sorted(os.environ.items()):
        if name.startswith(ENV_PREFIX):
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            out.append((dotted, value, name))
    return out


def _read_yaml(path: str | Path | None) -> tuple[dict, str]:
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        text = resources.files("propensity").joinpath("configs/local.yaml").read_text()
        source = EMBEDDED
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{path}: config file not found")
        text = p.read_text()
        source = str(p)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    return data, source


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load, override and validate a config; raise ConfigError naming the key and where its
    value came from: the file, the environment variable, or the --set item."""
    data, source = _read_yaml(path)
    # key path -> what set it, for the error messages; the file is blamed for everything else.
    origins: dict[tuple[str, ...], str] = {}

    def override(dotted: str, value: str, origin: str) -> None:
        keys = _set_path(data, dotted, _parse_scalar(value), origin)
        for covered in [k for k in origins if k[: len(keys)] == keys]:
            del origins[covered]  # a whole section set again replaces what was set inside it
        origins[keys] = origin

    for dotted, value, name in _env_overrides():
        override(dotted, value, f"environment variable {name}")
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        dotted, value = item.split("=", 1)
        override(dotted, value, f"--set {item}")

    def blamed(loc: tuple[str, ...]) -> str:
        # The override that set the key or a section around it; else one that created a key
        # below it (an unknown key is reported at its parent); else the file.
        around = [k for k in origins if loc[: len(k)] == k]
        if around:
            return origins[max(around, key=len)]
        below = [k for k in origins if k[: len(loc)] == loc and loc]
        return origins[min(below, key=len)] if below else source

    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as e:
        problems: dict[str, list[str]] = {}
        for err in e.errors():
            loc = tuple(str(p) for p in err["loc"])
            problems.setdefault(blamed(loc), []).append(f"{'.'.join(loc) or '(top)'}: {err['msg']}")
        raise ConfigError(
            "; ".join(f"{where}: invalid config: {'; '.join(ps)}" for where, ps in problems.items())
        ) from None
