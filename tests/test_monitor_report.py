"""The monitoring report's plots: what they draw and that the page fits a 1280 px window."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from propensity.model import metrics
from propensity.monitoring import report
from propensity.plots import png_bytes

# The report's body margin (2em at 16 px) on either side of a 1280 px window.
PAGE_WIDTH = 1280 - 2 * 32


def _skewed_calibration(seed: int = 0) -> dict:
    """A real calibration table whose first bin holds nearly every row: the model's scores sit
    below the reference's first quantile, as on the small run the report's screenshot shows."""
    rng = np.random.default_rng(seed)
    p = np.r_[rng.uniform(0.0, 0.02, 2000), 0.03, 0.045, 0.06, 0.061, rng.uniform(0.2, 0.3, 40)]
    y = (rng.uniform(size=len(p)) < np.maximum(p, 0.08)).astype(float)
    return metrics.calibration(y, p, [0.0, 0.024, 0.031, 0.037, 0.044, 0.052, 0.067, 0.089,
                                      0.112, 0.181, 1.0])


def test_calibration_bins_under_the_minimum_are_hollow_and_empty_ones_absent():
    cal = _skewed_calibration()
    counts = [b["count"] for b in cal["bins"]]
    assert counts[0] >= 2000 and 0 in counts and 1 in counts and counts[-1] == 40
    points = report.calibration_points(cal)
    assert [p["n"] for p in points] == [c for c in counts if c]
    assert [p["solid"] for p in points] == [c >= report.MIN_BIN_ROWS for c in counts if c]
    for p in points:
        assert p["low"] <= p["observed_rate"] <= p["high"]
        assert p["positives"] == pytest.approx(p["observed_rate"] * p["n"])
    # One row says nothing: its interval spans most of [0, 1]; 2000 rows pin the rate down.
    one = next(p for p in points if p["n"] == 1)
    assert one["high"] - one["low"] > 0.7 and points[0]["high"] - points[0]["low"] < 0.05

    fig = report.calibration_figure({"predictions_date": "2026-01-13",
                                     "targets": {"order_7d": {"calibration": cal}}})
    ax = fig.axes[0]
    drawn = {c.get_label(): c.lines[0] for c in ax.containers}
    solid = drawn[f"bin of {report.MIN_BIN_ROWS}+ rows"]
    hollow = drawn[f"bin under {report.MIN_BIN_ROWS} rows (too few to judge)"]
    big = [p for p in points if p["solid"]]
    assert list(solid.get_xdata()) == pytest.approx([p["mean_predicted"] for p in big])
    assert len(hollow.get_xdata()) == sum(not p["solid"] for p in points)
    assert hollow.get_markerfacecolor() == "white"
    assert {t.get_text() for t in ax.texts} == {f"n={p['n']:,}" for p in points}
    report.pyplot().close(fig)


def test_calibration_caption_says_how_the_bins_were_made():
    cal = {**_skewed_calibration(), "bins_from": "reference quantiles"}
    text = report.calibration_caption({"targets": {"order_7d": {"calibration": cal}}})
    counts = [b["count"] for b in cal["bins"]]
    assert "10 bins at the reference quantiles" in text
    assert "rows per bin " + ", ".join(f"{c:,}" for c in counts) in text
    assert f"{counts.count(0)} empty not drawn" in text


def _check(name: str, stat: str, value: float | None, alerts: bool = True) -> dict:
    return {"name": name, "statistic": stat, "value": value, "threshold": 0.2,
            "passed": None if value is None else value <= 0.2, "alerts": alerts}


def _trend() -> list[dict]:
    """Nine reports: score PSI informational (no alert) and 40x its threshold on days 2-7,
    as on days whose weekday the old model's reference lacked; a new model on day 8."""
    out = []
    for i in range(9):
        weekday_missing = 1 <= i <= 6
        psi = 8.0 if weekday_missing else 0.02
        out.append({
            "date": f"2026-01-{12 + i:02d}",
            "model_version": "2026-01-12.1" if i < 7 else "2026-01-19.1",
            "checks": [
                _check("score_psi:order_7d", "psi", psi, alerts=not weekday_missing),
                _check("input_ks:price", "ks", None if i == 3 else 0.05, alerts=False),
                *[_check(f"{k}:{s}", stat, 0.04 * (j + 1)) for j, (k, s, stat) in enumerate([
                    ("type_share_today", "view", "abs_log_ratio"),
                    ("tracking_outage", "view", "share_lost"),
                    ("event_type_mix", "mix", "jensen_shannon")])],
            ],
        })
    return out


def test_trend_points_mark_informational_checks_and_gaps():
    points = report.trend_points(_trend(), "psi")["score_psi:order_7d"]
    assert points["ratio"][1] == pytest.approx(40.0) and points["ratio"][8] == pytest.approx(0.1)
    assert list(points["alerting"]) == [True] + [False] * 6 + [True, True]
    ks = report.trend_points(_trend(), "ks")["input_ks:price"]
    assert np.isnan(ks["ratio"][3]) and not ks["alerting"].any()


def test_trend_clips_huge_ratios_and_keeps_today_readable():
    fig = report.trend_figure(_trend())
    psi = next(ax for ax in fig.axes if ax.get_title().startswith("psi"))
    _, hi = psi.get_ylim()
    assert hi < 1.5 * report.TREND_CLIP  # today's 0.1 is not squashed under a 40x axis
    ys = np.concatenate([line.get_ydata() for line in psi.get_lines()
                         if len(line.get_xdata()) and line.get_linestyle() != "--"])
    assert np.nanmax(ys) <= report.TREND_CLIP
    assert sum(t.get_text() == "40×" for t in psi.texts) == 6  # the clipped values, written
    # Hollow markers exactly on the six informational days.
    hollow = [line for line in psi.get_lines() if line.get_markerfacecolor() == "white"]
    assert sorted(x for line in hollow for x in line.get_xdata()) == [1, 2, 3, 4, 5, 6]
    # The model change's label sits above the axes, not across the data.
    label = next(t for t in psi.texts if t.get_text() == "2026-01-19.1")
    assert label.xy[1] == 1 and label.get_va() == "bottom"
    report.pyplot().close(fig)


def test_trend_of_five_statistics_fits_the_page():
    trend = _trend()
    for r in trend:
        r["checks"].append(_check("input_ks:history_length", "ks", 0.1, alerts=False))
    png = png_bytes(report.trend_figure(trend), dpi=90)
    assert Image.open(io.BytesIO(png)).width <= PAGE_WIDTH


@pytest.fixture(scope="module")
def counter_summaries(tmp_path_factory):
    """Real summaries of D-7 and D (a full snapshot chain: 21 days, a 14-day window), and of D
    with 40% of its rows' counters unknown."""
    import datetime as dt

    import _counters_data as shop
    from conftest import make_config

    from propensity.model import stats

    cfg = make_config(tmp_path_factory.mktemp("shop"), "histories.retention_days=14")
    start, day = dt.date(2026, 1, 1), dt.date(2026, 1, 21)
    shop.generate(cfg, start, 21, 600)
    ref_day = day - dt.timedelta(days=7)
    today = shop.snapshot(cfg, day)
    return (stats.summarize(shop.snapshot(cfg, ref_day), {}, ref_day, cfg),
            stats.summarize(today, {}, day, cfg),
            stats.summarize(shop.counters_unknown(today, 0.4), {}, day, cfg))


def _counter_axes(fig):
    return [ax for ax in fig.axes if ax.get_title().startswith("counter ")]


def test_inputs_figure_draws_each_counter_against_the_reference(counter_summaries):
    from matplotlib.patches import Rectangle, StepPatch

    from propensity.model import stats

    reference, _, current = counter_summaries
    fig = report.input_figure(current, reference)
    axes = _counter_axes(fig)
    assert len(axes) == len(stats.counter_edges())
    for ax, name in zip(axes, stats.counter_edges()):
        cur, ref = current["counters"][name], reference["counters"][name]
        assert ax.get_title() == (f"counter {name.replace('_', ' ')} (unknown "
                                  f"{current['counters']['unknown_share']:.0%}, ref 0%)")
        assert ax.get_ylabel() == "share of profiles (known counters)"
        bars = [p.get_height() for p in ax.patches if isinstance(p, Rectangle)]
        assert bars == pytest.approx(np.array(cur["counts"]) / cur["n"])  # known rows only
        (stairs,) = [p for p in ax.patches if isinstance(p, StepPatch)]
        assert stairs.get_data().values == pytest.approx(np.array(ref["counts"]) / ref["n"])
    assert current["counters"]["unknown_share"] > 0.3  # the titles above say so
    png = png_bytes(fig, dpi=90)
    assert Image.open(io.BytesIO(png)).width <= PAGE_WIDTH


def test_inputs_figure_of_a_reference_without_counters_draws_today_alone(counter_summaries):
    from matplotlib.patches import StepPatch

    reference, current, _ = counter_summaries
    older = {k: v for k, v in reference.items() if k != "counters"}
    fig = report.input_figure(current, older)
    for ax in _counter_axes(fig):
        assert ax.get_title().endswith("(unknown 0%, ref –)")
        assert not [p for p in ax.patches if isinstance(p, StepPatch)]
    report.pyplot().close(fig)
