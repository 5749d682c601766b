"""The monitoring report for people: one self-contained HTML file, plots as base64 PNG.

Sections: the verdict first (alerts by kind: data quality, drift, quality); what the reference
is; data quality of D (records in, quarantined by reason, D's own events against the reference);
every check (sample sizes, value, threshold, p-value, pass/fail); scores on the reference's
quantile bins; input distributions against the reference (the histories' window counters
among them, with the share of rows whose counters are unknown); the trend of the checks over the last
`monitoring.trend_days` reports, model changes marked; realised quality of D-H (AUROC/AP against
validation, calibration on the reference's quantile bins) and realised-vs-validation AUROC per
model version; the explanation stage's global attribution summary when
`monitoring.attribution_profiles` > 0. Every plot has a legend.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from scipy.stats import binomtest

from propensity.model import stats
from propensity.plots import img_tag, pyplot

_CUR, _REF = "#1f77b4", "#ff7f0e"
PANELS_PER_ROW = 3  # three panels of 4-4.6 in at 90 dpi fit the page in a 1280 px window
TREND_CLIP = 3.0  # trend panels show value / threshold up to this; points above are clipped
MIN_BIN_ROWS = 30  # a calibration bin with fewer rows is drawn hollow: too few to judge by


def _shares(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum() if c.sum() else c


def _grid(plt, panels: int, width: float, height: float):
    """A figure of `panels` axes, at most PANELS_PER_ROW a row so that the page fits its
    window; the cells left over in the last row are switched off. Constrained layout, so that
    legends placed outside the axes get their room."""
    cols = min(max(panels, 1), PANELS_PER_ROW)
    rows = -(-max(panels, 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[panels:]:
        ax.axis("off")
    return fig, flat[:panels]


def _legend_below(ax, ncol: int = 2) -> None:
    """The legend under the axes, below the tick labels: it never covers data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=ncol, fontsize=7,
              frameon=False)


def _edge_ticks(ax, edges, most: int = 8) -> None:
    """Ticks on the bin edges of a panel whose bin i spans [i, i + 1]: every bin is as wide as
    the next on the page (the edges are quantiles or log-like steps), each tick labelled with
    the edge's real value, at most `most` of them so that the labels stay large and flat."""
    step = -(-(len(edges) - 1) // (most - 1))
    idx = list(range(0, len(edges), max(step, 1)))
    ax.set_xticks(idx, [_edge_label(edges[i]) for i in idx], fontsize=7)
    ax.set_xlim(0, len(edges) - 1)


def _edge_label(edge: float) -> str:
    return f"{edge:,.0f}" if edge >= 1000 else f"{edge:.3g}"  # 2,000 rather than 2e+03


def _bins_against_reference(ax, counts, ref_counts, edges, labels=("today", "reference")):
    """Today's shares as bars, the reference's as a step line over the same bins (bin i on
    [i, i + 1]): the line's first and last bins are whole, as wide as their bars."""
    n = len(counts)
    ax.bar(np.arange(n), _shares(counts), width=1.0, align="edge", color=_CUR, alpha=0.7,
           edgecolor="white", lw=0.5, label=labels[0])
    if ref_counts is not None:
        ax.stairs(_shares(ref_counts), np.arange(n + 1), color=_REF, lw=2, label=labels[1])
    _edge_ticks(ax, edges)
    ax.tick_params(axis="y", labelsize=7)


def score_figure(checks: list[dict]):
    """Today's share per score bin against the reference's, on the PSI check's quantile bins
    (about equal reference shares by construction: a flat orange line is the reference)."""
    plt = pyplot()
    psis = [c for c in checks if c["statistic"] == "psi" and c["value"] is not None]
    fig, axes = _grid(plt, len(psis), 4.6, 3.2)
    for ax, c in zip(axes, psis):
        d = c["detail"]
        _bins_against_reference(ax, d["counts"], d["reference_counts"], d["edges"],
                                (f"today (n={c['n']:,})", f"reference (n={c['reference_n']:,})"))
        ax.set_title(f"{c['name'].split(':')[-1]}: PSI {c['value']:.3f} "
                     f"(threshold {c['threshold']:.3f})", fontsize=9)
        ax.set_xlabel("score, at the bins' edges", fontsize=8)
        ax.set_ylabel("share of profiles", fontsize=8)
        _legend_below(ax)
    return fig


# What each numeric input's histogram counts (stats.summarize): the y-axis label.
_UNIT = {"price": "share of events with a price"}


def _input_panels(current: dict, reference: dict) -> list[tuple[str, dict, dict | None, str]]:
    """(title, today's histogram, the reference's where it has the same bins, y label) of each
    numeric input, then of each window counter (rows with known counters; the title gives the
    share of rows whose counters are unknown, today and in the reference)."""
    out = []
    for name, cur in current["numeric"].items():
        out.append((name.replace("_", " "), cur, reference.get("numeric", {}).get(name),
                    _UNIT.get(name, "share of profiles")))
    counters, ref_counters = current.get("counters"), reference.get("counters")
    if counters is not None:
        ref_unknown = ("–" if ref_counters is None
                       else f"{ref_counters['unknown_share']:.0%}")
        for name in stats.counter_edges():
            title = (f"counter {name.replace('_', ' ')} (unknown {counters['unknown_share']:.0%}"
                     f", ref {ref_unknown})")
            out.append((title, counters[name], (ref_counters or {}).get(name),
                        "share of profiles (known counters)"))
    return out


def input_figure(current: dict, reference: dict):
    """Each input's histogram today against the reference's, then each window counter's, the
    event-type mix and the null shares; one legend for the figure (today blue, reference orange
    in every panel)."""
    plt = pyplot()
    panels = _input_panels(current, reference)
    fig, flat = _grid(plt, len(panels) + 2, 4.3, 2.8)
    for ax, (title, cur, ref, unit) in zip(flat, panels):
        same = ref is not None and ref.get("edges") == cur["edges"]
        _bins_against_reference(ax, cur["counts"], ref["counts"] if same else None,
                                cur["edges"])
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
    _paired_bars(flat[len(panels)], current["event_types"]["shares"],
                 reference.get("event_types", {}).get("shares", {}),
                 "event-type mix (histories)", "share of events", rotation=45)
    _paired_bars(flat[len(panels) + 1], current["null_shares"],
                 reference.get("null_shares", {}), "null share per field", "share null")
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=2, fontsize=8, frameon=False)
    return fig


def _paired_bars(ax, today: dict, ref: dict, title: str, ylabel: str, rotation: int = 0):
    x = np.arange(len(today))
    ax.bar(x - 0.2, list(today.values()), 0.4, color=_CUR, label="today")
    ax.bar(x + 0.2, [ref.get(k, 0) for k in today], 0.4, color=_REF, label="reference")
    ax.set_xticks(x, list(today), fontsize=7, rotation=rotation,
                  ha="right" if rotation else "center", rotation_mode="anchor")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)


def _model_changes(trend: list[dict]) -> list[tuple[int, str]]:
    """(index, new version) of each report whose model differs from the one before it."""
    return [(i, r["model_version"]) for i, r in enumerate(trend)
            if i and r.get("model_version") != trend[i - 1].get("model_version")]


def _mark_changes(ax, changes: list[tuple[int, str]]) -> None:
    """A dotted line before each report of a new model, its version above the axes' top edge
    (never across the data)."""
    for i, version in changes:
        ax.axvline(i - 0.5, color="grey", ls=":", lw=1.2)
        ax.annotate(version, (i - 0.5, 1), xycoords=("data", "axes fraction"),
                    xytext=(0, 2), textcoords="offset points", fontsize=6, ha="center",
                    va="bottom", color="grey")


TREND_STATS = ("psi", "ks", "jensen_shannon", "abs_log_ratio", "share_lost")


def trend_points(trend: list[dict], stat: str) -> dict[str, dict[str, np.ndarray]]:
    """Per check of `stat`: its value / threshold in each report (NaN where not computed) and
    whether that report's check could alert (False: informational, reported without an alert,
    e.g. scores of a weekday the reference lacks)."""
    out = {}
    names = sorted({c["name"] for r in trend for c in r["checks"] if c["statistic"] == stat})
    for name in names:
        ratio, alerting = [], []
        for r in trend:
            c = next((c for c in r["checks"] if c["name"] == name), None)
            ok = c is not None and c["value"] is not None and c["threshold"]
            ratio.append(c["value"] / c["threshold"] if ok else np.nan)
            alerting.append(bool(ok and c.get("alerts", True)))
        out[name] = {"ratio": np.array(ratio), "alerting": np.array(alerting)}
    return out


def _trend_panel(ax, points: dict[str, dict[str, np.ndarray]]) -> None:
    """The checks that come nearest their threshold (six, so that the legend stays short),
    filled where the check could alert, hollow where it was informational; values above
    TREND_CLIP are drawn at the clip as triangles with their value written next to them."""
    top = sorted(points, key=lambda k: -np.nanmax(np.r_[points[k]["ratio"], -1.0]))[:6]
    peak = 1.0
    for k, name in enumerate(top):
        ratio, alerting = points[name]["ratio"], points[name]["alerting"]
        shown = np.minimum(ratio, TREND_CLIP)
        x = np.arange(len(ratio))
        color = f"C{k % 10}"
        ax.plot(x, shown, color=color, lw=1.2, label=name.split(":")[-1])
        clipped = ratio > TREND_CLIP
        for mask, face in ((alerting & ~clipped, color), (~alerting & ~clipped, "white")):
            ax.plot(x[mask], shown[mask], "o", ms=4, color=color, mfc=face, ls="none")
        for mask, face in ((alerting & clipped, color), (~alerting & clipped, "white")):
            ax.plot(x[mask], shown[mask], "^", ms=6, color=color, mfc=face, ls="none")
        for i in np.flatnonzero(clipped):
            ax.annotate(f"{ratio[i]:.0f}×", (i, TREND_CLIP), xytext=(0, 5),
                        textcoords="offset points", fontsize=6, ha="center", color=color)
        peak = max(peak, np.nanmax(np.r_[shown, 0.0]))
    ax.axhline(1.0, color="red", ls="--", lw=1)
    ax.set_ylim(0, peak * (1.2 if peak >= TREND_CLIP else 1.08))  # room for the values
    ax.tick_params(axis="y", labelsize=7)


def _trend_key(plt) -> list:
    """The handles of the trend figure's shared legend: what the markers and lines mean."""
    Line2D = plt.Line2D  # matplotlib on demand, as pyplot() is
    grey = {"color": "0.3", "ls": "none"}
    return [
        Line2D([], [], marker="o", mfc="0.3", ms=5, label="check that could alert", **grey),
        Line2D([], [], marker="o", mfc="white", ms=5,
               label="informational (reported, no alert)", **grey),
        Line2D([], [], marker="^", mfc="0.3", ms=6,
               label=f"above {TREND_CLIP:g}× threshold, drawn at the top (value written)",
               **grey),
        Line2D([], [], color="red", ls="--", lw=1, label="threshold (1 = alert line)"),
        Line2D([], [], color="grey", ls=":", lw=1.2, label="model change (new version above)"),
    ]


def trend_figure(trend: list[dict]):
    """One panel per statistic: each check's value per day over its threshold (the check's
    value / threshold, so 1 is the alert line for every check); model changes dotted."""
    plt = pyplot()
    present = {c["statistic"] for r in trend for c in r["checks"]}
    stats_ = [s for s in TREND_STATS if s in present] or sorted(present)
    fig, axes = _grid(plt, len(stats_), 4.2, 3.3)
    days = [r["date"] for r in trend]
    changes = _model_changes(trend)
    for ax, stat in zip(axes, stats_):
        _trend_panel(ax, trend_points(trend, stat))
        _mark_changes(ax, changes)
        ax.set_xticks(range(len(days)), [d[5:] for d in days], rotation=45, fontsize=7)
        ax.set_title(f"{stat} / threshold", fontsize=9, pad=10)
        _legend_below(ax, ncol=3)
    fig.legend(handles=_trend_key(plt), loc="outside upper center", ncol=3, fontsize=8,
               frameon=False)
    return fig


def realised_figure(trend: list[dict]):
    """Realised AUROC of each matured day (by the day predicted), coloured by model version,
    with each version's validation AUROC dashed in its colour: realised vs validation."""
    plt = pyplot()
    points: dict[str, dict[str, list]] = {}
    validation: dict[tuple[str, str], float] = {}
    for r in trend:
        q = r.get("quality", {})
        if q.get("status") != "ok":
            continue
        for t, row in q["targets"].items():
            if row.get("auroc") is None:
                continue
            pts = points.setdefault(t, {})
            pts.setdefault(q["model_version"], []).append(
                (q["predictions_date"], row["auroc"], row.get("auroc_se")))
            if row.get("validation_auroc") is not None:
                validation[(t, q["model_version"])] = row["validation_auroc"]
    if not points:
        return None
    fig, axes = _grid(plt, len(points), 4.6, 3.2)
    for ax, (t, by_version) in zip(axes, points.items()):
        days = sorted({d for pts in by_version.values() for d, _, _ in pts})
        for k, (version, pts) in enumerate(sorted(by_version.items())):
            color = f"C{k % 10}"
            x = [days.index(d) for d, _, _ in pts]
            ax.errorbar(x, [a for _, a, _ in pts], yerr=[2 * (se or 0) for _, _, se in pts],
                        fmt="o-", ms=3, capsize=3, color=color, label=f"{version} realised")
            if (t, version) in validation:
                ax.axhline(validation[(t, version)], color=color, ls="--", lw=1,
                           label=f"{version} validation")
        ax.set_xticks(range(len(days)), [d[5:] for d in days], rotation=45, fontsize=7)
        ax.set_xlim(-0.5, len(days) - 0.5)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"AUROC {t}: realised (±2 se) vs validation", fontsize=9)
        _legend_below(ax)
    return fig


def calibration_points(calibration: dict, min_rows: int = MIN_BIN_ROWS) -> list[dict]:
    """The calibration bins worth a point: every non-empty bin with its row count, positives,
    a 95% Wilson interval of its observed rate and `solid` (at least `min_rows` rows; a bin
    of one or two rows is an observed rate of 0 or 1 whatever the model's calibration)."""
    out = []
    for b in calibration["bins"]:
        if not b["count"]:
            continue
        positives = round(b["observed_rate"] * b["count"])
        ci = binomtest(positives, b["count"]).proportion_ci(0.95, method="wilson")
        out.append({"n": b["count"], "positives": positives,
                    "mean_predicted": b["mean_predicted"], "observed_rate": b["observed_rate"],
                    "low": ci.low, "high": ci.high, "solid": b["count"] >= min_rows})
    return out


def calibration_figure(quality: dict):
    """Per target: each bin's observed rate against its mean prediction, with its 95% interval
    and its row count written next to it; bins under MIN_BIN_ROWS rows hollow."""
    plt = pyplot()
    targets = list(quality["targets"])
    fig, axes = _grid(plt, len(targets), 4.2, 3.6)
    for ax, t in zip(axes, targets):
        pts = calibration_points(quality["targets"][t]["calibration"])
        solid = [p for p in pts if p["solid"]]
        top = max([p["mean_predicted"] for p in pts] + [p["observed_rate"] for p in pts]
                  + [p["high"] for p in solid] + [0.01]) * 1.1
        ax.plot([0, top], [0, top], color="grey", ls=":", label="perfect calibration")
        small = [p for p in pts if not p["solid"]]
        for group, color, face, label in (
                (solid, _CUR, _CUR, f"bin of {MIN_BIN_ROWS}+ rows"),
                (small, "0.6", "white", f"bin under {MIN_BIN_ROWS} rows (too few to judge)")):
            if not group:
                continue
            y = np.array([p["observed_rate"] for p in group])
            err = [y - [p["low"] for p in group], np.array([p["high"] for p in group]) - y]
            ax.errorbar([p["mean_predicted"] for p in group], y, yerr=err, fmt="o", ms=5,
                        color=color, mfc=face, capsize=2, lw=1, label=label)
        for p in pts:
            ax.annotate(f"n={p['n']:,}", (p["mean_predicted"], p["observed_rate"]),
                        xytext=(4, 3), textcoords="offset points", fontsize=6)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("mean predicted", fontsize=8)
        ax.set_ylabel("observed rate (95% Wilson interval)", fontsize=8)
        ax.set_title(f"calibration {t} ({quality['predictions_date']})", fontsize=9)
        _legend_below(ax, ncol=1)
    return fig


def calibration_caption(quality: dict) -> str:
    """How the calibration plot's bins were made, per target: a sentence under the plot."""
    parts = []
    for t, row in quality["targets"].items():
        cal = row["calibration"]
        counts = [b["count"] for b in cal["bins"]]
        shown = sum(c >= MIN_BIN_ROWS for c in counts)
        small = sum(0 < c < MIN_BIN_ROWS for c in counts)
        edges = ", ".join(f"{e:.3g}" for e in cal.get("edges", []))
        parts.append(
            f"{html.escape(t)}: {len(counts)} bins at the "
            f"{html.escape(cal.get('bins_from', 'quantiles'))} (edges {edges}; rows per bin "
            f"{', '.join(f'{c:,}' for c in counts)}): {shown} with {MIN_BIN_ROWS} rows or more "
            f"drawn solid, {small} with fewer hollow, {counts.count(0)} empty not drawn")
    return ("<p class='caption'>Calibration bins: " + "; ".join(parts)
            + ". Each point is a bin's observed positive rate against its mean prediction, "
            "with its 95% Wilson interval and its row count.</p>")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def _status(passed: bool | None, alerts: bool = True) -> str:
    if passed is None:
        return '<td class="skip">n/a</td>'
    if passed:
        return '<td class="ok">pass</td>'
    return '<td class="bad">FAIL</td>' if alerts else '<td class="warn">drifted (no alert)</td>'


def _verdict(result: dict) -> tuple[bool, str]:
    """(any alert, the verdict line): alerts by kind, most actionable first."""
    failed = [c for c in result["checks"] if c["passed"] is False and c.get("alerts", True)]
    drifted = [c["name"] for c in result["checks"]
               if c["passed"] is False and not c.get("alerts", True)]
    dq = [c["name"] for c in failed if c["group"] == "data_quality"]
    drift = [c["name"] for c in failed if c["group"] != "data_quality"]
    quality = result["quality"]
    q_failed = [t for t, r in quality.get("targets", {}).items() if r["passed"] is False]
    parts = []
    if dq:
        parts.append(f"DATA QUALITY ALERT ({len(dq)}): {', '.join(dq)}")
    if q_failed:
        parts.append(f"QUALITY ALERT: realised AUROC of {', '.join(q_failed)} dropped")
    if drift:
        parts.append(f"DRIFT ALERT ({len(drift)}): {', '.join(drift)}")
    note = (f" (inputs drifted, reported for diagnosis without an alert: {', '.join(drifted)})"
            if drifted else "")
    if not parts:
        computed = sum(c["passed"] is not None for c in result["checks"])
        if drifted:
            return False, f"No alert{note}."
        return False, f"No alert: all {computed} computed checks passed."
    return True, " · ".join(parts) + note


def _p(v: float | None) -> str:
    return "–" if v is None else f"{v:.2g}"


def _n(v: Any) -> str:
    return "–" if v is None else f"{v:,}"


def _check_rows(checks: list[dict]) -> str:
    return "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td>{c['statistic']}</td><td>{_n(c.get('n'))}</td>"
        f"<td>{_n(c.get('reference_n'))}</td><td>{_fmt(c['value'])}</td>"
        f"<td>{_fmt(c['threshold'])}</td><td>{_fmt(c.get('practical_threshold'))}</td>"
        f"<td>{_fmt(c.get('noise_threshold'))}</td>"
        f"<td>{_p(c.get('p_value'))}</td>"
        f"{_status(c['passed'], c.get('alerts', True))}</tr>"
        for c in checks
    )


_CHECK_HEAD = ("<table><tr><th>check</th><th>statistic</th><th>n</th><th>reference n</th>"
               "<th>value</th><th>threshold</th><th>practical</th><th>noise level</th>"
               "<th>p-value</th><th>result</th></tr>")


def _reference_line(result: dict, reference: dict) -> str:
    about = result.get("reference") or {}
    covers = about.get("covers") or [reference.get("as_of")]
    against = about.get("drift_against") or covers
    return (
        f"<p>Reference: the validation rows of model {html.escape(result['model_version'])}'s "
        f"training, {about.get('rows', reference.get('rows', 0)):,} profiles over "
        f"{len(covers)} day(s) ({html.escape(', '.join(map(str, covers)))}); statistics schema "
        f"{about.get('schema_version')}. Drift is checked against "
        f"{html.escape(about.get('drift_basis', 'the whole reference'))}: "
        f"{html.escape(', '.join(map(str, against)))} ({about.get('drift_rows', 0):,} profiles); "
        "data quality against the whole reference. A check fails when its value exceeds both "
        "its practical threshold and the noise level its two samples reach with probability "
        f"{result['thresholds'].get('significance')} under no drift.</p>"
    )


def _intake(result: dict) -> str:
    q = next((c for c in result["checks"] if c["name"] == "quarantine_share"), None)
    if q is None or q["value"] is None:
        return "<p>No aggregation summary for this day.</p>"
    d = q["detail"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(d["quarantined"].items())) or "none"
    unknown = next((c for c in result["checks"] if c["name"] == "unknown_type_share"), {})
    return (
        f"<p>Records read {d['records_read']:,}; valid {d['records_valid']:,}; quarantined "
        f"{d['quarantined_total']:,} ({reasons}); unknown event types "
        f"{unknown.get('detail', {}).get('unknown_event_types', 0):,}.</p>"
    )


def render(result: dict, current: dict, reference: dict, trend: list[dict],
           attribution_html: str | None = None) -> str:
    """The whole report as one HTML string (no external resources). `reference` is the part of
    the reference drift was checked against; `attribution_html` is the explanation stage's
    global attribution summary (a <section>), when configured."""
    alert, verdict = _verdict(result)
    quality = result["quality"]
    dq_checks = [c for c in result["checks"] if c["group"] == "data_quality"]
    drift_checks = [c for c in result["checks"] if c["group"] != "data_quality"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        (f"<title>propensity monitoring {result['date']}</title><style>"
        # No image wider than the page: a 1280 px window shows every plot whole.
        "body{font-family:sans-serif;margin:2em;max-width:1400px}img{max-width:100%;height:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px}.ok{background:#d4edda}.bad{background:#f8d7da;font-weight:bold}"
        ".skip{background:#eee}.warn{background:#fff3cd}.verdict{font-size:1.2em;padding:.5em}"
        ".caption{font-size:13px;color:#444}</style></head><body>"),
        f"<h1>Monitoring {result['date']}</h1>",
        f"<p class='verdict {'bad' if alert else 'ok'}'>{html.escape(verdict)}</p>",
        (f"<p>Model <b>{html.escape(result['model_version'])}</b>; {result['rows']:,} profiles "
        "scored.</p>"),
        _reference_line(result, reference),
        "<h2>Data quality</h2>",
        _intake(result),
        f"{_CHECK_HEAD}{_check_rows(dq_checks)}</table>",
        "<h2>Drift checks</h2>",
        f"{_CHECK_HEAD}{_check_rows(drift_checks)}</table>",
        "<h2>Scores against the reference (bins at the reference's quantiles)</h2>",
        img_tag(score_figure(result["checks"]), dpi=90),
        "<h2>Inputs against the reference</h2>",
        img_tag(input_figure(current, reference), dpi=90),
        f"<h2>Trend (last {len(trend)} report{'' if len(trend) == 1 else 's'})</h2>",
        img_tag(trend_figure(trend), dpi=90),
        "<h2>Realised quality</h2>",
    ]
    if quality["status"] != "ok":
        parts.append(f"<p>Pending: {html.escape(quality['reason'])}.</p>")
    else:
        qrows = "".join(
            f"<tr><td>{html.escape(t)}</td><td>{r['rows']:,}</td><td>{r['positives']:,}</td>"
            f"<td>{_fmt(r['auroc'])} ± {_fmt(r.get('auroc_se'))}</td>"
            f"<td>{_fmt(r['validation_auroc'])}</td>"
            f"<td>{_fmt(r.get('validation_baseline_auroc'))}</td>"
            f"<td>{_fmt(r['average_precision'])}</td><td>{_fmt(r['validation_average_precision'])}"
            f"</td><td>{_fmt(r['calibration']['ece'])}</td>"
            f"<td>{_fmt(r.get('validation_calibration_error'))}</td><td>{_fmt(r['auc_drop'])}</td>"
            f"<td>{_fmt(r['threshold'])}</td>{_status(r['passed'])}</tr>"
            for t, r in quality["targets"].items()
        )
        parts += [
            (f"<p>Predictions of {quality['predictions_date']} (model "
            f"{html.escape(quality['model_version'])}) against labels matured by "
            f"{quality['labels_from']}; alert when validation AUROC - realised AUROC exceeds "
            f"{result['thresholds']['auc_drop']} and the noise of the two AUROCs.</p>"),
            ("<table><tr><th>target</th><th>rows</th><th>positives</th><th>AUROC ± se</th>"
            "<th>validation AUROC</th><th>baseline validation AUROC</th><th>AP</th>"
            "<th>validation AP</th><th>ECE</th><th>validation ECE</th><th>AUROC drop</th>"
            f"<th>threshold</th><th>result</th></tr>{qrows}</table>"),
            img_tag(calibration_figure(quality), dpi=90),
            calibration_caption(quality),
        ]
    realised = realised_figure(trend)
    if realised is not None:
        parts += ["<h2>Realised vs validation AUROC per model version</h2>",
                  img_tag(realised, dpi=90)]
    if attribution_html:
        parts.append(attribution_html)
    parts.append("</body></html>")
    return "\n".join(parts)
