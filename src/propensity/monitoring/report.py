"""The monitoring report for people: one self-contained HTML file, plots as base64 PNG.

Sections: a verdict line; every check (value, threshold, pass/fail); score histograms against
the reference; input distributions against the reference (numeric histograms, event-type mix,
null shares); the trend of the checks over the last `monitoring.trend_days` reports; realised
quality of D-H (AUROC/AP against validation, calibration) once labels have matured; the
explanation stage's global attribution summary when `monitoring.attribution_profiles` > 0.
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


def score_figure(current: dict, reference: dict):
    plt = pyplot()
    targets = list(current["scores"])
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 2.8), squeeze=False)
    for ax, t in zip(axes[0], targets):
        _hist_panel(ax, f"score {t} (share per bin)", current["scores"][t],
                    reference.get("scores", {}).get(t))
    axes[0][0].legend(fontsize=7)
    return fig


def input_figure(current: dict, reference: dict):
    plt = pyplot()
    numeric = list(current["numeric"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 5.6))
    flat = axes.ravel()
    for ax, name in zip(flat, numeric):
        _hist_panel(ax, name.replace("_", " "), current["numeric"][name],
                    reference.get("numeric", {}).get(name))
    flat[0].legend(fontsize=7)
    ax = flat[len(numeric)]
    types = list(current["event_types"]["shares"])
    x = np.arange(len(types))
    ref_shares = reference.get("event_types", {}).get("shares", {})
    ax.bar(x - 0.2, [current["event_types"]["shares"][t] for t in types], 0.4, color=_CUR)
    ax.bar(x + 0.2, [ref_shares.get(t, 0) for t in types], 0.4, color=_REF)
    ax.set_xticks(x, types, rotation=45, ha="right", fontsize=7)
    ax.set_title("event-type mix", fontsize=9)
    ax = flat[len(numeric) + 1]
    fields = list(current["null_shares"])
    x = np.arange(len(fields))
    ref_nulls = reference.get("null_shares", {})
    ax.bar(x - 0.2, [current["null_shares"][f] for f in fields], 0.4, color=_CUR)
    ax.bar(x + 0.2, [ref_nulls.get(f, 0) for f in fields], 0.4, color=_REF)
    ax.set_xticks(x, fields, fontsize=7)
    ax.set_title("null share per field", fontsize=9)
    for a in flat[len(numeric) + 2 :]:
        a.axis("off")
    fig.tight_layout()
    return fig


def trend_figure(trend: list[dict]):
    """One panel per statistic: each check's value per day, its threshold dashed."""
    plt = pyplot()
    stats_ = sorted({c["statistic"] for r in trend for c in r["checks"]})
    fig, axes = plt.subplots(1, len(stats_), figsize=(3.4 * len(stats_), 2.8), squeeze=False)
    days = [r["date"] for r in trend]
    for ax, stat in zip(axes[0], stats_):
        names = sorted({c["name"] for r in trend for c in r["checks"] if c["statistic"] == stat})
        threshold = None
        for name in names:
            values = []
            for r in trend:
                hit = [c for c in r["checks"] if c["name"] == name]
                values.append(hit[0]["value"] if hit and hit[0]["value"] is not None else np.nan)
                threshold = hit[0]["threshold"] if hit else threshold
            ax.plot(range(len(days)), values, marker="o", ms=3, label=name.split(":")[-1])
        if threshold is not None:
            ax.axhline(threshold, color="red", ls="--", lw=1)
        ax.set_xticks(range(len(days)), [d[5:] for d in days], rotation=45, fontsize=7)
        ax.set_title(stat, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def calibration_figure(quality: dict):
    plt = pyplot()
    targets = list(quality["targets"])
    fig, axes = plt.subplots(1, len(targets), figsize=(3.6 * len(targets), 3.2), squeeze=False)
    for ax, t in zip(axes[0], targets):
        bins = [b for b in quality["targets"][t]["calibration"]["bins"] if b["count"]]
        ax.plot([0, 1], [0, 1], color="grey", ls=":")
        ax.plot([b["mean_predicted"] for b in bins], [b["observed_rate"] for b in bins],
                marker="o", color=_CUR)
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


def _status(passed: bool | None) -> str:
    if passed is None:
        return '<td class="skip">n/a</td>'
    return '<td class="ok">pass</td>' if passed else '<td class="bad">FAIL</td>'


def render(result: dict, current: dict, reference: dict, trend: list[dict],
           attribution_html: str | None = None) -> str:
    """The whole report as one HTML string (no external resources); `attribution_html` is the
    explanation stage's global attribution summary (a <section>), when configured."""
    failed = [c["name"] for c in result["checks"] if c["passed"] is False]
    quality = result["quality"]
    q_failed = [t for t, r in quality.get("targets", {}).items() if r["passed"] is False]
    verdict = (
        "all checks passed" if not failed and not q_failed
        else f"ALERT: {', '.join(failed + [f'quality:{t}' for t in q_failed])}"
    )
    rows = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td>{c['statistic']}</td><td>{_fmt(c['value'])}</td>"
        f"<td>{_fmt(c['threshold'])}</td>{_status(c['passed'])}</tr>"
        for c in result["checks"]
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>propensity monitoring {result['date']}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px}.ok{background:#d4edda}.bad{background:#f8d7da;font-weight:bold}"
        ".skip{background:#eee}.verdict{font-size:1.2em;padding:.5em}</style></head><body>",
        f"<h1>Monitoring {result['date']}</h1>",
        f"<p>Model <b>{html.escape(result['model_version'])}</b>; {result['rows']:,} profiles "
        f"scored; reference: validation data of {html.escape(str(reference.get('as_of')))} "
        f"({reference.get('rows', 0):,} profiles).</p>",
        f"<p class='verdict {'bad' if failed or q_failed else 'ok'}'>{html.escape(verdict)}</p>",
        "<h2>Checks</h2><table><tr><th>check</th><th>statistic</th><th>value</th>"
        f"<th>threshold</th><th>result</th></tr>{rows}</table>",
        "<h2>Scores against the reference</h2>",
        img_tag(score_figure(current, reference), dpi=90),
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
            f"<td>{_fmt(r['auroc'])}</td><td>{_fmt(r['validation_auroc'])}</td>"
            f"<td>{_fmt(r.get('validation_baseline_auroc'))}</td>"
            f"<td>{_fmt(r['average_precision'])}</td><td>{_fmt(r['validation_average_precision'])}"
            f"</td><td>{_fmt(r['calibration']['ece'])}</td>{_status(r['passed'])}</tr>"
            for t, r in quality["targets"].items()
        )
        parts += [
            f"<p>Predictions of {quality['predictions_date']} (model "
            f"{html.escape(quality['model_version'])}) against labels matured by "
            f"{quality['labels_from']}; alert when validation AUROC - realised AUROC &gt; "
            f"{result['thresholds']['auc_drop']}.</p>",
            "<table><tr><th>target</th><th>rows</th><th>positives</th><th>AUROC</th>"
            "<th>validation AUROC</th><th>baseline validation AUROC</th><th>AP</th><th>validation AP</th><th>ECE</th>"
            f"<th>result</th></tr>{qrows}</table>",
            img_tag(calibration_figure(quality), dpi=90),
        ]
    if attribution_html:
        parts.append(attribution_html)
    parts.append("</body></html>")
    return "\n".join(parts)
