"""The monitoring report for people: one self-contained HTML file, plots as base64 PNG.

Sections: the verdict first (alerts by kind: data quality, drift, quality); what the reference
is; data quality of D (records in, quarantined by reason, D's own events against the reference);
every check (sample sizes, value, threshold, p-value, pass/fail); scores on the reference's
quantile bins; input distributions against the reference; the trend of the checks over the last
`monitoring.trend_days` reports, model changes marked; realised quality of D-H (AUROC/AP against
validation, calibration on the reference's quantile bins) and realised-vs-validation AUROC per
model version; the explanation stage's global attribution summary when
`monitoring.attribution_profiles` > 0. Every plot has a legend.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from propensity.plots import img_tag, pyplot

_CUR, _REF = "#1f77b4", "#ff7f0e"


def _shares(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum() if c.sum() else c


def _hist_panel(ax, title, cur, ref, log_x=False):
    """Bar shares of today against the reference's shares as a step line, bin by bin."""
    n = len(cur["counts"])
    x = np.arange(n)
    ax.bar(x, _shares(cur["counts"]), width=0.9, color=_CUR, alpha=0.7, label="today")
    if ref is not None and ref.get("edges") == cur["edges"]:
        ax.step(x, _shares(ref["counts"]), where="mid", color=_REF, lw=2, label="reference")
    edges = cur["edges"]
    ticks = x[:: max(1, n // 6)]
    ax.set_xticks(ticks, [f"{edges[i]:g}" for i in ticks], fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=6)


def score_figure(checks: list[dict]):
    """Today's share per score bin against the reference's, on the PSI check's quantile bins
    (about equal reference shares by construction: a flat orange line is the reference)."""
    plt = pyplot()
    psis = [c for c in checks if c["statistic"] == "psi" and c["value"] is not None]
    fig, axes = plt.subplots(1, max(len(psis), 1), figsize=(4.6 * max(len(psis), 1), 3.0),
                             squeeze=False)
    for ax, c in zip(axes[0], psis):
        d = c["detail"]
        x = np.arange(len(d["counts"]))
        ax.bar(x, _shares(d["counts"]), width=0.8, color=_CUR, alpha=0.7,
               label=f"today (n={c['n']:,})")
        ax.step(x, _shares(d["reference_counts"]), where="mid", color=_REF, lw=2,
                label=f"reference (n={c['reference_n']:,})")
        edges = d["edges"]
        ax.set_xticks(x, [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in x], rotation=60,
                      fontsize=6)
        ax.set_title(f"{c['name'].split(':')[-1]}: PSI {c['value']:.3f} "
                     f"(threshold {c['threshold']:.3f})", fontsize=9)
        ax.set_ylabel("share of profiles", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def input_figure(current: dict, reference: dict):
    plt = pyplot()
    numeric = list(current["numeric"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 5.6))
    flat = axes.ravel()
    for ax, name in zip(flat, numeric):
        _hist_panel(ax, name.replace("_", " "), current["numeric"][name],
                    reference.get("numeric", {}).get(name))
    ax = flat[len(numeric)]
    types = list(current["event_types"]["shares"])
    x = np.arange(len(types))
    ref_shares = reference.get("event_types", {}).get("shares", {})
    ax.bar(x - 0.2, [current["event_types"]["shares"][t] for t in types], 0.4, color=_CUR,
           label="today")
    ax.bar(x + 0.2, [ref_shares.get(t, 0) for t in types], 0.4, color=_REF, label="reference")
    ax.set_xticks(x, types, rotation=45, ha="right", fontsize=7)
    ax.set_title("event-type mix (histories)", fontsize=9)
    ax.legend(fontsize=7)
    ax = flat[len(numeric) + 1]
    fields = list(current["null_shares"])
    x = np.arange(len(fields))
    ref_nulls = reference.get("null_shares", {})
    ax.bar(x - 0.2, [current["null_shares"][f] for f in fields], 0.4, color=_CUR,
           label="today")
    ax.bar(x + 0.2, [ref_nulls.get(f, 0) for f in fields], 0.4, color=_REF, label="reference")
    ax.set_xticks(x, fields, fontsize=7)
    ax.set_title("null share per field", fontsize=9)
    ax.legend(fontsize=7)
    for a in flat[len(numeric) + 2 :]:
        a.axis("off")
    fig.tight_layout()
    return fig


def _model_changes(trend: list[dict]) -> list[tuple[int, str]]:
    """(index, new version) of each report whose model differs from the one before it."""
    return [(i, r["model_version"]) for i, r in enumerate(trend)
            if i and r.get("model_version") != trend[i - 1].get("model_version")]


def _mark_changes(ax, changes: list[tuple[int, str]]) -> None:
    for k, (i, version) in enumerate(changes):
        ax.axvline(i - 0.5, color="grey", ls=":", lw=1.2,
                   label="model change" if k == 0 else None)
        ax.annotate(version, (i - 0.5, 1), xycoords=("data", "axes fraction"), fontsize=6,
                    rotation=90, va="top", ha="right", color="grey")


TREND_STATS = ("psi", "ks", "jensen_shannon", "abs_log_ratio", "share_lost")


def trend_figure(trend: list[dict]):
    """One panel per statistic: each check's value per day over its threshold (the check's
    value / threshold, so 1 is the alert line for every check); model changes dotted."""
    plt = pyplot()
    present = {c["statistic"] for r in trend for c in r["checks"]}
    stats_ = [s for s in TREND_STATS if s in present] or sorted(present)
    fig, axes = plt.subplots(1, len(stats_), figsize=(3.6 * len(stats_), 3.0), squeeze=False)
    days = [r["date"] for r in trend]
    changes = _model_changes(trend)
    for ax, stat in zip(axes[0], stats_):
        names = sorted({c["name"] for r in trend for c in r["checks"] if c["statistic"] == stat})
        # The checks that come nearest their threshold, so that the legend stays readable.
        peak = {}
        for name in names:
            values = []
            for r in trend:
                hit = [c for c in r["checks"] if c["name"] == name]
                ok = hit and hit[0]["value"] is not None and hit[0]["threshold"]
                values.append(hit[0]["value"] / hit[0]["threshold"] if ok else np.nan)
            peak[name] = values
        top = sorted(peak, key=lambda k: -np.nanmax(np.r_[peak[k], -1.0]))[:6]
        for name in top:
            ax.plot(range(len(days)), peak[name], marker="o", ms=3, label=name.split(":")[-1])
        ax.axhline(1.0, color="red", ls="--", lw=1, label="threshold")
        _mark_changes(ax, changes)
        ax.set_xticks(range(len(days)), [d[5:] for d in days], rotation=45, fontsize=7)
        ax.set_title(f"{stat} / threshold", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
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
    fig, axes = plt.subplots(1, len(points), figsize=(5 * len(points), 3.0), squeeze=False)
    for ax, (t, by_version) in zip(axes[0], points.items()):
        days = sorted({d for pts in by_version.values() for d, _, _ in pts})
        for k, (version, pts) in enumerate(sorted(by_version.items())):
            color = f"C{k % 10}"
            x = [days.index(d) for d, _, _ in pts]
            ax.errorbar(x, [a for _, a, _ in pts], yerr=[2 * (se or 0) for _, _, se in pts],
                        fmt="o-", ms=3, color=color, label=f"{version} realised")
            if (t, version) in validation:
                ax.axhline(validation[(t, version)], color=color, ls="--", lw=1,
                           label=f"{version} validation")
        ax.set_xticks(range(len(days)), [d[5:] for d in days], rotation=45, fontsize=7)
        ax.set_title(f"AUROC {t}: realised (±2 se) vs validation", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def calibration_figure(quality: dict):
    plt = pyplot()
    targets = list(quality["targets"])
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.2), squeeze=False)
    for ax, t in zip(axes[0], targets):
        bins = [b for b in quality["targets"][t]["calibration"]["bins"] if b["count"]]
        top = max([b["mean_predicted"] for b in bins] + [b["observed_rate"] for b in bins] + [0.01])
        ax.plot([0, top], [0, top], color="grey", ls=":", label="perfect calibration")
        ax.plot([b["mean_predicted"] for b in bins], [b["observed_rate"] for b in bins],
                marker="o", color=_CUR,
                label=f"realised ({len(bins)} bins at "
                      f"{quality['targets'][t]['calibration'].get('bins_from', 'quantiles')})")
        ax.legend(fontsize=7)
        ax.set_xlabel("mean predicted", fontsize=8)
        ax.set_ylabel("observed rate", fontsize=8)
        ax.set_title(f"calibration {t} ({quality['predictions_date']})", fontsize=9)
    fig.tight_layout()
    return fig


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
        "body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px}.ok{background:#d4edda}.bad{background:#f8d7da;font-weight:bold}"
        ".skip{background:#eee}.warn{background:#fff3cd}.verdict{font-size:1.2em;padding:.5em}</style></head><body>"),
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
        f"<h2>Trend (last {len(trend)} reports)</h2>",
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
        ]
    realised = realised_figure(trend)
    if realised is not None:
        parts += ["<h2>Realised vs validation AUROC per model version</h2>",
                  img_tag(realised, dpi=90)]
    if attribution_html:
        parts.append(attribution_html)
    parts.append("</body></html>")
    return "\n".join(parts)
