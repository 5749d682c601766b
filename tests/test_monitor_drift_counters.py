"""Drift checks of the histories' window counters, on real snapshots with planted faults.

One generated shop (1500 profiles, 28 days, a 14-day retention window, so that the snapshot
chain is full from 2026-01-14 on) goes through the aggregation's oracle (tests/_counters_data.py).
The clean day D is compared with D-7 (the same weekday, as the monitor picks it); each fault is
planted in D's snapshot the way a broken upstream or merge would leave it.
"""

from __future__ import annotations

import datetime as dt

import _counters_data as shop
import pytest
import torch
from _scoring_data import publish_model
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.model import stats
from propensity.model.network import PropensityModel
from propensity.monitoring import drift
from propensity.monitoring.job import comparison_reference
from propensity.scoring.engine import score_table
from propensity.scoring.run import run as score

START = dt.date(2026, 1, 1)
D = dt.date(2026, 1, 28)
YOUNG = dt.date(2026, 1, 7)  # the chain is half the retention window old
OVERRIDES = ("histories.retention_days=14",)
KS = [f"input_ks:counter:{k}" for k in stats.counter_edges()]
COUNTER_CHECKS = ["counters_unknown_share", *KS]


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """The config and the snapshots of a young day (Jan 7), D-7, D-4 and D."""
    cfg = make_config(tmp_path_factory.mktemp("shop"), *OVERRIDES)
    shop.generate(cfg, START, (D - START).days + 1, 1500)
    days = [YOUNG, D - dt.timedelta(days=7), D - dt.timedelta(days=4), D]
    return cfg, {day: shop.snapshot(cfg, day) for day in days}


def _summary(cfg, table, day=D):
    return stats.summarize(table, {}, day, cfg)


def _reference(cfg, tables):
    """The part of a two-day reference (D-7 and D-4) that D is compared with: D-7's."""
    days = [D - dt.timedelta(days=7), D - dt.timedelta(days=4)]
    parts = [_summary(cfg, tables[d], d) for d in days]
    against, about = comparison_reference(stats.merge(parts), D)
    assert about["drift_against"] == [str(days[0])]
    return against


def _counter_checks(cfg, current, reference):
    """The counter checks among all drift checks, by name."""
    out = {
        c["name"]: c for c in drift.checks(current, reference, cfg) if c["name"] in COUNTER_CHECKS
    }
    assert all(c["group"] == "inputs" for c in out.values())
    return out


def _failed(checks):
    return {name for name, c in checks.items() if c["passed"] is False}


def test_a_clean_day_passes_every_counter_check(snapshots):
    cfg, tables = snapshots
    reference = _reference(cfg, tables)
    current = _summary(cfg, tables[D])
    checks = _counter_checks(cfg, current, reference)
    assert list(checks) == COUNTER_CHECKS
    assert all(c["passed"] is True for c in checks.values()), checks
    # Sample sizes: the rows with known counters on each side (all of them here).
    assert current["counters"]["unknown"] == 0 and reference["counters"]["unknown"] == 0
    for name in KS:
        assert checks[name]["n"] == tables[D].num_rows
        assert checks[name]["reference_n"] == reference["rows"]
        assert checks[name]["noise_threshold"] < cfg.monitoring.ks_threshold


def test_order_values_in_cents_fail_the_order_value_check(snapshots):
    cfg, tables = snapshots
    reference = _reference(cfg, tables)
    cents = _summary(cfg, shop.order_value_scaled(tables[D], 100))
    checks = _counter_checks(cfg, cents, reference)
    assert _failed(checks) == {"input_ks:counter:order_value"}
    value = checks["input_ks:counter:order_value"]
    assert value["value"] > value["threshold"] and value["p_value"] < cfg.monitoring.significance


def test_counters_unknown_for_many_rows_fail_the_unknown_share(snapshots):
    """An incremental day on a version-1 snapshot: 40% of the rows lose their counters. The
    unknown share fails; the rows still known compare as before, counted as the known rows."""
    cfg, tables = snapshots
    reference = _reference(cfg, tables)
    current = _summary(cfg, shop.counters_unknown(tables[D], 0.4))
    checks = _counter_checks(cfg, current, reference)
    assert _failed(checks) == {"counters_unknown_share"}
    unknown = checks["counters_unknown_share"]
    assert unknown["detail"]["share"] == pytest.approx(0.4, abs=0.05)
    assert unknown["n"] == tables[D].num_rows and unknown["reference_n"] == reference["rows"]
    known = tables[D].num_rows - current["counters"]["unknown"]
    assert 0 < known < tables[D].num_rows
    assert all(checks[name]["n"] == known for name in KS)

    # A version-1 snapshot (no counter columns at all): every row unknown, nothing to compare.
    old = _counter_checks(cfg, _summary(cfg, shop.version_1(tables[D])), reference)
    assert old["counters_unknown_share"]["value"] == 1.0
    assert _failed(old) == {"counters_unknown_share"}
    for name in KS:
        assert old[name]["passed"] is None
        assert old[name]["detail"]["skipped"] == "no row with known counters today"


def test_a_reference_without_counters_skips_with_the_reason(snapshots):
    cfg, tables = snapshots
    reference = _reference(cfg, tables)
    older = {k: v for k, v in reference.items() if k != "counters"}  # made before the counters
    checks = _counter_checks(cfg, _summary(cfg, tables[D]), older)
    assert list(checks) == COUNTER_CHECKS
    for c in checks.values():
        assert c["passed"] is None and "retrain" in c["detail"]["skipped"]
    # And today's summary of a day scored before the counters.
    today = {k: v for k, v in _summary(cfg, tables[D]).items() if k != "counters"}
    for c in _counter_checks(cfg, today, reference).values():
        assert c["passed"] is None and "scored before the counters" in c["detail"]["skipped"]


def test_a_chain_of_version_1_snapshots_reports_only_the_unknown_share(snapshots):
    cfg, tables = snapshots
    old = shop.version_1(tables[D - dt.timedelta(days=7)])
    reference = _summary(cfg, old, D - dt.timedelta(days=7))
    checks = _counter_checks(cfg, _summary(cfg, shop.version_1(tables[D])), reference)
    assert list(checks) == ["counters_unknown_share"] and not _failed(checks)


def test_a_young_chain_skips_the_counter_histograms(snapshots):
    """On Jan 7 the chain is 7 days old, half the window: tenure and the window's sums still
    grow daily, so D cannot be compared with it (their KS would be far beyond the threshold with
    nothing wrong). The unknown share is compared whatever the chain's age."""
    cfg, tables = snapshots
    young = _summary(cfg, tables[YOUNG], YOUNG)
    unfilled = drift._ks_check(
        "tenure",
        "inputs",
        young["counters"]["days_since_first_seen"],
        _summary(cfg, tables[D])["counters"]["days_since_first_seen"],
        cfg.monitoring.ks_threshold,
        cfg.monitoring.significance,
    )
    assert unfilled["passed"] is False  # what the check would say if it compared them
    checks = _counter_checks(cfg, _summary(cfg, tables[D]), young)
    assert checks["counters_unknown_share"]["passed"] is True
    for name in KS:
        assert checks[name]["passed"] is None
        assert "young snapshot chain" in checks[name]["detail"]["skipped"]
        assert "7.0 days" in checks[name]["detail"]["skipped"]
    # A reference of a young and a full day is not full: every day of it must be.
    full = D - dt.timedelta(days=7)
    mixed = stats.merge([young, _summary(cfg, tables[full], full)])
    assert all(
        _counter_checks(cfg, _summary(cfg, tables[D]), mixed)[n]["passed"] is None for n in KS
    )


def test_a_tenure_reset_on_a_full_chain_fails_the_tenure_check(snapshots):
    """A merge that forgets first_seen makes every profile look new today: on a full chain the
    tenure check fails (the young-chain rule reads the reference only, never D)."""
    cfg, tables = snapshots
    checks = _counter_checks(
        cfg, _summary(cfg, shop.tenure_reset(tables[D])), _reference(cfg, tables)
    )
    assert _failed(checks) == {"input_ks:counter:days_since_first_seen"}


def test_the_monitor_names_the_counter_check_of_cents_in_its_alert(snapshots, tmp_path):
    """End to end: histories(D) with order values in cents, scored by a champion whose reference
    is its own statistics on D-7; `monitor` with input drift alerting exits 11 naming the check,
    and the report shows the counter checks."""
    _, tables = snapshots
    cfg = make_config(tmp_path / "run", *OVERRIDES)
    ref_day = D - dt.timedelta(days=7)
    torch.manual_seed(0)  # the weights publish_model(seed=0) gives the champion
    model = PropensityModel.from_config(cfg).eval()
    probs = score_table(model, tables[ref_day], ref_day, cfg.scoring.batch_size)
    reference = stats.summarize(
        tables[ref_day], {t: probs[:, j] for j, t in enumerate(cfg.target_names)}, ref_day, cfg
    )
    publish_model(cfg, f"{ref_day}.1", seed=0, reference=reference)
    part = storage.partition(cfg.uri("histories"), D)
    storage.write_parquet(
        shop.order_value_scaled(tables[D], 100), storage.join(part, "part-00000.parquet")
    )
    storage.mark_complete(part)
    score(cfg, D)
    result = CliRunner().invoke(
        app,
        [
            "monitor",
            "--date",
            str(D),
            "--fail-on-drift",
            "--set",
            f"storage.root={cfg.storage.root}",
            "--set",
            "monitoring.alert_on_input_drift=true",
            *[a for o in OVERRIDES for a in ("--set", o)],
        ],
    )
    assert result.exit_code == 11 and "input_ks:counter:order_value" in result.output, result.output
    reports = storage.partition(cfg.uri("reports"), D)
    report = storage.read_json(storage.join(reports, "monitoring.json"))
    failed = {c["name"] for c in report["checks"] if c["passed"] is False}
    assert "input_ks:counter:order_value" in failed
    assert not failed & {"counters_unknown_share", "input_ks:counter:window_orders"}
    page = storage.read_bytes(storage.join(reports, "report.html")).decode()
    assert all(f"<td>{name}</td>" in page for name in COUNTER_CHECKS)
