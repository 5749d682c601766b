"""The global attribution summary for people: a plot, a terminal table and HTML.

Shared by `propensity explain --summary` and the monitoring report (`summary_html`).
"""

from __future__ import annotations

import html

import numpy as np
from rich.table import Table
from rich.text import Text

from propensity.plots import img_tag, page, pyplot


def summary_figure(summary: dict):
    """Mean |contribution| and mean signed contribution by event type and by recency."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, key, title in [(axes[0], "by_event_type", "event type"),
                           (axes[1], "by_recency", "time before the prediction")]:
        groups = [g for g, v in summary[key].items() if v["events"]]
        x = np.arange(len(groups))
        mean_abs = [summary[key][g]["mean_abs"] for g in groups]
        mean = [summary[key][g]["mean"] for g in groups]
        ax.bar(x - 0.2, mean_abs, width=0.4, color="0.6", label="mean |contribution|")
        ax.bar(x + 0.2, mean, width=0.4, color=["#c0392b" if m > 0 else "#2e6da4" for m in mean],
               label="mean contribution")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"per event, by {title}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"what drives {summary['target']}: {summary['profiles']} profiles of {summary['date']}, "
        f"model {summary['model_version']}", fontsize=10,
    )
    return fig


def summary_table(summary: dict) -> Table:
    """The global summary for the terminal: one row per event type and recency bucket."""
    table = Table(
        title=(f"what drives {summary['target']} · {summary['profiles']} profiles of "
               f"{summary['date']} · model {summary['model_version']}"),
        caption=(f"integrated gradients per event; mean prediction {summary['mean_prediction']:.3f}"
                 f", mean f(baseline) {summary['mean_baseline']:.3f}, largest completeness gap "
                 f"{summary['max_completeness_gap']:.4f} ({summary['profiles_not_complete']} "
                 "profiles above 0.01)"),
        caption_justify="left",
    )
    for col in ["by", "group", "events", "mean |contribution|", "mean contribution",
                "share of |contribution|"]:
        table.add_column(col, justify="left" if col in ("by", "group") else "right")
    for key, title in [("by_event_type", "event type"), ("by_recency", "recency")]:
        for group, v in summary[key].items():
            table.add_row(title, group, str(v["events"]), f"{v['mean_abs']:.4f}",
                          Text(f"{v['mean']:+.4f}", style="red" if v["mean"] > 0 else "blue"),
                          f"{v['share_of_abs']:.1%}")
    return table


def summary_page(summary: dict) -> str:
    """A self-contained HTML page holding the summary fragment."""
    return page(f"what drives the predictions · {summary['date']}", summary_html(summary))


def summary_html(summary: dict) -> str:
    """An HTML fragment (a <section>, plot inline) for the monitoring report."""
    esc = html.escape
    rows = []
    for key, title in [("by_event_type", "event type"), ("by_recency", "recency")]:
        for group, v in summary[key].items():
            rows.append(
                f"<tr><td>{esc(title)}</td><td>{esc(group)}</td><td>{v['events']}</td>"
                f"<td>{v['mean_abs']:.4f}</td><td>{v['mean']:+.4f}</td>"
                f"<td>{v['share_of_abs']:.1%}</td></tr>"
            )
    return (
        "<section><h2>What drives the predictions</h2>"
        f"<p>Integrated gradients of {esc(summary['target'])} for {summary['profiles']} sampled "
        f"profiles ({summary['events']} events) of {esc(summary['date'])}, model "
        f"{esc(summary['model_version'])}, baseline: {esc(summary['baseline'])}. Mean prediction "
        f"{summary['mean_prediction']:.3f}, mean f(baseline) {summary['mean_baseline']:.3f}, "
        f"largest completeness gap {summary['max_completeness_gap']:.4f} "
        f"({summary['profiles_not_complete']} profiles above 0.01).</p>"
        f"{img_tag(summary_figure(summary))}"
        "<table><tr><th>by</th><th>group</th><th>events</th><th>mean |contribution|</th>"
        "<th>mean contribution</th><th>share of |contribution|</th></tr>"
        f"{''.join(rows)}</table></section>"
    )
