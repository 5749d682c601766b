"""`propensity daily`: backfill, resume after a failure in each step, exit codes.

One tiny generated stream (2000 profiles, 7 days) is shared; each test runs the real stages
(Spark aggregation, Lightning training, scoring, monitoring) in its own storage root. Failures are
injected with real means: an input that has not arrived, an output location that cannot be
written (a file where the folder must go), then fixed, and the day run again.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.cycle.daily import run_day, run_range
from propensity.registry import store

START = dt.date(2026, 1, 5)  # a Monday
DAYS = [START + dt.timedelta(days=i) for i in range(7)]
RANGE = DAYS[:5]  # the backfill under test; DAYS[5:] are for the exit-code tests
H = 2  # label horizon: the first model is trained on DAYS[2]
QUIET_MONITORING = [  # no alert unless a test asks for one
    "monitoring.psi_threshold=100", "monitoring.js_threshold=100", "monitoring.ks_threshold=100",
    "monitoring.null_share_threshold=100", "monitoring.auc_drop_threshold=1",
]  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    from propensity.events.generate import generate_stream

    out = tmp_path_factory.mktemp("stream") / "events"
    generate_stream(str(out), START, len(DAYS), 2000, seed=3, horizons={"p_order_2d": H})
    return out


def day_config(root: Path, events: Path, *extra: str):
    return make_config(
        root,
        f"storage.events={events}",
        "targets=[{name: order_2d, event_types: [order], horizon_days: 2}]",
        "model.hidden_size=8",
        "training.max_epochs=2",
        "training.warm_epochs=1",
        "training.accelerator=cpu",
        f"training.work_dir={root}/work",
        "gate.min_auc=0",
        "gate.max_auc_drop=1",
        # no champion on DAYS[2] trains it; DAYS[4] (a Friday) is the scheduled retrain
        f"schedule.train_weekdays=[{DAYS[4].weekday()}]",
        "histories.output_files=1",
        "spark.shuffle_partitions=2",
        *QUIET_MONITORING,
        *extra,
    )


@pytest.fixture(scope="module")
def reference(spark, events, tmp_path_factory):
    """An uninterrupted backfill over RANGE: the outputs every resumed run must end with."""
    root = tmp_path_factory.mktemp("reference")
    cfg = day_config(root, events)
    code = run_range(cfg, RANGE[0], RANGE[-1])
    return root, cfg, code


def records(cfg) -> list[dict]:
    runs = storage.join(cfg.uri("reports"), "runs")
    return [storage.read_json(u) for u in storage.list_files(runs, suffix=".json")]


def outcomes(record: dict) -> dict[str, str]:
    return {s["step"]: s["outcome"] for s in record["steps"]}


def table(partition: str, sort: str = "profile_id") -> pa.Table:
    return storage.read_parquet(partition).sort_by(sort)


def test_backfill_bootstraps_trains_on_schedule_scores_and_monitors(reference):
    root, cfg, code = reference
    assert code == 0
    by_day = {r["day"]: r for r in records(cfg)}
    assert sorted(by_day) == [d.isoformat() for d in RANGE]
    first = by_day[RANGE[0].isoformat()]
    assert first["steps"][0]["detail"].startswith("first snapshot, from the raw window: ")
    # labels mature on DAYS[2]: nothing to train or score before it
    for d in RANGE[:2]:
        assert outcomes(by_day[d.isoformat()]) == {
            "aggregate": "ran", "train": "skipped", "score": "skipped", "monitor": "skipped"
        }  # fmt: skip
    assert "labels not mature" in by_day[RANGE[0].isoformat()]["steps"][1]["detail"]
    # cold model on DAYS[2] (no champion), not scheduled on DAYS[3], warm retrain on DAYS[4]
    trained = [(d, outcomes(by_day[d.isoformat()])["train"]) for d in RANGE[2:]]
    assert trained == [(RANGE[2], "ran"), (RANGE[3], "skipped"), (RANGE[4], "ran")]
    assert "not scheduled" in by_day[RANGE[3].isoformat()]["steps"][1]["detail"]
    versions = store.version_names(cfg)
    assert versions == [f"{RANGE[2]}.1", f"{RANGE[4]}.1"]
    warm = store.read_metadata(cfg, versions[1])
    assert warm["warm_start"] and warm["parent_version"] == versions[0]
    assert store.champion_version(cfg) == versions[1]
    # every day from DAYS[2] scored with the champion of that day, and monitored
    for d, version in zip(RANGE[2:], [versions[0], versions[0], versions[1]]):
        assert by_day[d.isoformat()]["model_version"] == version
        assert storage.is_complete(storage.partition(cfg.uri("predictions"), d))
        assert storage.is_complete(storage.partition(cfg.uri("reports"), d))
    # the matured-label check of DAYS[2]'s predictions ran on DAYS[4]
    report = storage.read_json(storage.join(storage.partition(cfg.uri("reports"), RANGE[4]), "monitoring.json"))
    assert report["quality"]["status"] == "ok" and report["quality"]["predictions_date"] == str(RANGE[2])


def test_a_second_run_of_a_complete_day_does_nothing(reference):
    root, cfg, _ = reference
    before = sorted(p.stat().st_mtime_ns for p in root.rglob("*.parquet"))
    run = run_day(cfg, RANGE[4])
    assert [s.outcome for s in run.steps] == ["skipped"] * 4
    assert run.exit_code == 0 and run.model_version == f"{RANGE[4]}.1"
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("*.parquet")) == before


def block(path: str) -> Path:
    """Make a partition or folder unwritable the way a broken mount would: a file in its place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("not a folder")
    return p


def test_resumes_after_a_failure_in_each_step_and_ends_like_an_uninterrupted_run(
    reference, events, tmp_path
):
    _, ref_cfg, _ = reference
    own_events = tmp_path / "events"
    shutil.copytree(events, own_events)
    cfg = day_config(tmp_path / "data", own_events)
    days = RANGE[:3]  # the first model is trained, scored and monitored on the last of them

    def attempt() -> tuple[int, dict]:
        code = run_range(cfg, days[0], days[-1])
        latest = max(records(cfg), key=lambda r: r["record"])  # named by day and start time
        return code, latest

    # 1. aggregate: the day's events have not arrived (no marker yet)
    marker = own_events / f"dt={days[1]}" / "_SUCCESS"
    marker.rename(own_events / "held-back")
    code, rec = attempt()
    assert code == 3 and rec["day"] == str(days[1]) and outcomes(rec)["aggregate"] == "failed"
    assert not storage.exists(storage.partition(cfg.uri("histories"), days[1]))
    (own_events / "held-back").rename(marker)

    # 2. train: the model registry cannot be written
    blocked = block(store.root(cfg))
    code, rec = attempt()
    assert code == 1 and rec["day"] == str(days[2])
    assert outcomes(rec) == {"aggregate": "ran", "train": "failed", "score": "not run", "monitor": "not run"}
    blocked.unlink()

    # 3. score: the day's predictions cannot be written
    blocked = block(storage.partition(cfg.uri("predictions"), days[2]))
    code, rec = attempt()
    assert code == 1 and rec["day"] == str(days[2])
    assert outcomes(rec) == {"aggregate": "skipped", "train": "ran", "score": "failed", "monitor": "not run"}
    blocked.unlink()

    # 4. monitor: the day's report cannot be written
    blocked = block(storage.partition(cfg.uri("reports"), days[2]))
    code, rec = attempt()
    assert code == 1 and rec["day"] == str(days[2])
    assert outcomes(rec) == {"aggregate": "skipped", "train": "skipped", "score": "ran", "monitor": "failed"}
    blocked.unlink()

    code, rec = attempt()
    assert code == 0 and outcomes(rec) == {
        "aggregate": "skipped", "train": "skipped", "score": "skipped", "monitor": "ran"
    }  # fmt: skip

    # the same outputs as the uninterrupted run
    for d in days:
        assert table(storage.partition(cfg.uri("histories"), d)).equals(
            table(storage.partition(ref_cfg.uri("histories"), d))
        ), d
    (version,) = store.version_names(cfg)
    assert store.champion_version(cfg) == version == store.version_names(ref_cfg)[0]
    ours, theirs = store.read_metadata(cfg, version), store.read_metadata(ref_cfg, version)
    assert ours["gate"]["decision"] == theirs["gate"]["decision"] == "approved"
    assert ours["weights"]["sha256"] == theirs["weights"]["sha256"]
    d = days[2]
    ours = table(storage.partition(cfg.uri("predictions"), d))
    theirs = table(storage.partition(ref_cfg.uri("predictions"), d))
    assert ours.equals(theirs)
    report = json.loads(Path(storage.partition(cfg.uri("reports"), d), "monitoring.json").read_text())
    ref_report = json.loads(Path(storage.partition(ref_cfg.uri("reports"), d), "monitoring.json").read_text())
    assert [(c["name"], c["value"]) for c in report["checks"]] == [
        (c["name"], c["value"]) for c in ref_report["checks"]
    ]


@pytest.fixture
def continued(reference, tmp_path):
    """A copy of the reference backfill's storage, to run the days after it."""
    root, _, _ = reference
    shutil.copytree(root, tmp_path / "data", ignore=shutil.ignore_patterns("work"))
    return tmp_path / "data"


def test_gate_rejected_exits_10_and_scores_with_the_old_champion(continued, events, tmp_path):
    day = DAYS[5]
    cfg = day_config(continued, events, "gate.min_auc=0.9999", f"schedule.train_weekdays=[{day.weekday()}]")
    champion = store.champion_version(cfg)
    args = ["daily", "--date", str(day), "--config", config_file(cfg, tmp_path / "config.yaml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 10, result.output
    assert store.champion_version(cfg) == champion
    assert store.version_names(cfg)[-1] == f"{day}.1"
    assert store.read_metadata(cfg, f"{day}.1")["gate"]["decision"] == "rejected"
    predictions = storage.read_parquet(storage.partition(cfg.uri("predictions"), day))
    assert set(predictions.column("model_version").to_pylist()) == {champion}
    (rec,) = [r for r in records(cfg) if r["day"] == str(day)]
    assert rec["exit_code"] == 10 and rec["model_version"] == champion
    # running the day again keeps telling the scheduler what happened, without retraining
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 10 and store.version_names(cfg)[-1] == f"{day}.1"


def test_drift_exits_11_and_asks_for_a_retrain_the_next_day(continued, events):
    day = DAYS[5]
    # Thresholds below any noise, and a significance at which sampling noise excuses nothing.
    drift = ["monitoring.psi_threshold=0.000001", "monitoring.js_threshold=0.000001",
             "monitoring.ks_threshold=0.000001", "monitoring.significance=0.999",
             "monitoring.alert_on_input_drift=true"]  # fmt: skip
    cfg = day_config(continued, events, *drift)
    run = run_day(cfg, day)
    assert run.exit_code == 11
    assert [s.outcome for s in run.steps] == ["ran", "skipped", "ran", "ran"]  # not a training day
    assert "DRIFT ALERT" in run.step("monitor").detail
    # the next day is not scheduled either, but yesterday's alert asks for a retrain
    next_run = run_day(day_config(continued, events), DAYS[6])
    assert next_run.step("train").outcome == "ran"
    assert f"monitoring of {day} asked for it" in next_run.step("train").detail


def config_file(cfg, path: Path) -> str:
    """`cfg` as a YAML file, for the command line."""
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def test_usage_errors():
    runner = CliRunner()
    assert runner.invoke(app, ["daily"]).exit_code == 2
    result = runner.invoke(app, ["daily", "--from", "2026-01-10", "--to", "2026-01-05"])
    assert result.exit_code == 2 and "before" in result.output
    result = runner.invoke(app, ["daily", "--date", "2026-01-10", "--only", "explain"])
    assert result.exit_code == 2 and "explain" in result.output
    result = runner.invoke(app, ["daily", "--date", "2026-13-01"])
    assert result.exit_code == 2 and "--date" in result.output
