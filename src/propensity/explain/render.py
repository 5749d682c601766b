"""Explanations for people: terminal tables (rich), PNG plots (matplotlib), HTML pages.

Every renderer takes the JSON-ready dicts of `profile.explain_rows` (the global summary renders
in `attribution.render`),
so what people see is exactly what machines get. Profile ids shown are pseudonymised.
"""

from __future__ import annotations

import html

import numpy as np
from rich.table import Table
from rich.text import Text

from propensity.explain.profile import short
from propensity.plots import img_tag, page, pyplot

_CMAP = "RdBu_r"  # red: pushes the prediction up, blue: pushes it down


def _bar(value: float, scale: float, width: int = 10) -> Text:
    n = int(round(min(abs(value) / scale, 1.0) * width)) if scale > 0 else 0
    return Text("█" * n, style="red" if value > 0 else "blue")


def _fmt(value, spec: str = "") -> str:
    return "" if value is None else format(value, spec)


def profile_table(e: dict) -> Table:
    """The events of one explanation: time, type, article hash, price, running probability,
    contribution (with a bar), leave-one-out."""
    ig = e["integrated_gradients"]
    table = Table(
        title=(
            f"profile {e['profile_id']} (pseudonymised) · {e['date']} · "
            f"model {e['model_version']} · {e['target']} = {e['prediction']:.3f}"
        ),
        caption=Text.assemble(
            f"contribution: integrated gradients from an all-zero input baseline, f(baseline) = "
            f"{ig['baseline_prediction']:.3f}; they sum to {ig['sum_of_contributions']:+.4f}, "
            f"f(x) - f(baseline) = {ig['expected_sum']:+.4f} (gap {ig['completeness_gap']:.4f}, "
            f"{ig['steps']} steps). ",
            ("" if ig["within_tolerance"] else (
                f"NOT COMPLETE: the gap exceeds {ig['tolerance']}, the output jumps along the "
                "integration path; read leave-one-out. ", "bold red")),
            "leave-one-out: f(x) - f(x without the event).",
        ),
        caption_justify="left",
    )
    for col, justify in [("#", "right"), ("time (UTC)", "left"), ("type", "left"),
                         ("article", "right"), ("price", "right"), ("p after", "right"),
                         ("contribution", "right"), ("", "left"), ("leave-one-out", "right")]:
        table.add_column(col, justify=justify, no_wrap=True, overflow="ellipsis")
    scale = max((abs(ev["contribution"]) for ev in e["events"]), default=0.0)
    for ev in e["events"]:
        c = ev["contribution"]
        table.add_row(
            str(ev["index"]),
            ev["ts"][:16].replace("T", " "),
            ev["event_type"] or "",
            _fmt(ev["article"]),
            _fmt(ev["price"], ".2f"),
            f"{ev['running_probability']:.3f}",
            Text(f"{c:+.4f}", style="red" if c > 0 else "blue"),
            _bar(c, scale),
            _fmt(ev["leave_one_out"], "+.4f"),
        )
    return table


def _strongest(e: dict, k: int = 3) -> str:
    events = sorted(e["events"], key=lambda ev: -abs(ev["contribution"]))[:k]
    return ", ".join(f"{ev['event_type']}#{ev['index']} {ev['contribution']:+.3f}" for ev in events)


def top_table(explanations: list[dict], scores: list[float] | None = None) -> Table:
    """One line per explained profile: prediction, baseline, the strongest events."""
    first = explanations[0]
    table = Table(title=f"top {len(explanations)} · {first['date']} · model "
                        f"{first['model_version']} · {first['target']}",
                  caption=f"profile: pseudonymised id prefix; explain one with propensity explain "
                          f"--date {first['date']} --pseudonymised --profile PREFIX",
                  caption_justify="left")
    for col in ["rank", "profile", "prediction", "f(baseline)", "events", "strongest events",
                "gap"]:
        table.add_column(col)
    for rank, e in enumerate(explanations, start=1):
        ig = e["integrated_gradients"]
        table.add_row(str(rank), short(e["profile_id"]), f"{e['prediction']:.3f}",
                      f"{ig['baseline_prediction']:.3f}", str(e["n_events"]), _strongest(e),
                      f"{ig['completeness_gap']:.4f}")
    return table


def _panel(fig, spec, e: dict) -> None:
    """Running probability with events coloured by contribution, above the contributions."""
    from matplotlib import colors

    plt = pyplot()
    events = e["events"]
    x = np.arange(len(events))
    running = np.array([ev["running_probability"] for ev in events])
    contrib = np.array([ev["contribution"] for ev in events])
    scale = max(float(np.abs(contrib).max(initial=0.0)), 1e-9)
    norm = colors.TwoSlopeNorm(vmin=-scale, vcenter=0.0, vmax=scale)
    cmap = plt.get_cmap(_CMAP)
    top, bottom = spec.subgridspec(2, 1, height_ratios=[2, 1], hspace=0.05).subplots(sharex=True)
    top.step(x, running, where="post", color="0.4", lw=1, zorder=1)
    points = top.scatter(x, running, c=contrib, cmap=cmap, norm=norm, s=40, edgecolor="k",
                         linewidth=0.4, zorder=2)
    base = e["integrated_gradients"]["baseline_prediction"]
    top.axhline(base, color="0.5", ls=":", lw=1, label=f"f(baseline) = {base:.3f}")
    top.axhline(e["prediction"], color="k", ls="--", lw=1,
                label=f"prediction = {e['prediction']:.3f}")
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel(f"P({e['target']})\nafter each event", fontsize=8)
    top.legend(fontsize=7, loc="upper left")
    top.set_title(f"profile {short(e['profile_id'])} · {e['date']} · model {e['model_version']}",
                  fontsize=9)
    bottom.bar(x, contrib, color=cmap(norm(contrib)), edgecolor="k", linewidth=0.3)
    bottom.axhline(0, color="k", lw=0.6)
    bottom.set_ylabel("contribution", fontsize=8)
    step = max(1, len(events) // 40)  # readable tick labels on long histories
    ticks = x[::step]
    bottom.set_xticks(ticks, [f"{events[i]['event_type']} {events[i]['ts'][5:10]}" for i in ticks],
                      rotation=60, ha="right", fontsize=7)
    bottom.set_xlabel("events, oldest to newest (label: type, month-day)", fontsize=8)
    fig.colorbar(points, ax=[top, bottom], fraction=0.03, pad=0.01, label="contribution")


def figure(explanations: list[dict]):
    """One two-row panel per explanation, stacked."""
    plt = pyplot()
    n = len(explanations)
    width = min(16.0, 6.0 + 0.12 * max(len(e["events"]) for e in explanations))
    fig = plt.figure(figsize=(width, 4.2 * n))
    grid = fig.add_gridspec(n, 1, hspace=0.55)
    for i, e in enumerate(explanations):
        _panel(fig, grid[i], e)
    return fig


def _profile_html(e: dict) -> str:
    ig = e["integrated_gradients"]
    esc = html.escape
    rows = []
    scale = max((abs(ev["contribution"]) for ev in e["events"]), default=0.0) or 1.0
    for ev in e["events"]:
        c = ev["contribution"]
        width = int(round(60 * min(abs(c) / scale, 1.0)))
        colour = "#c0392b" if c > 0 else "#2e6da4"
        cells = [
            str(ev["index"]), ev["ts"], ev["event_type"] or "", _fmt(ev["article"]),
            _fmt(ev["price"], ".2f"), f"{ev['running_probability']:.3f}", f"{c:+.4f}",
        ]
        bar = (f"<span style='display:inline-block;width:{width}px;height:9px;"
               f"background:{colour}'></span>")
        loo = _fmt(ev["leave_one_out"], "+.4f")
        rows.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in cells)
                    + f"<td>{bar}</td><td>{esc(loo)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ["#", "time (UTC)", "type", "article", "price",
                                              "p after", "contribution", "", "leave-one-out"])
    return (
        f"<section><h2>profile {esc(e['profile_id'])} <small>(pseudonymised)</small></h2>"
        f"<p>{esc(e['target'])} = <b>{e['prediction']:.3f}</b> on {esc(e['date'])}, model "
        f"{esc(e['model_version'])}, {e['n_events']} events. Baseline ({esc(ig['baseline'])}): "
        f"f(baseline) = {ig['baseline_prediction']:.3f}. Contributions (integrated gradients, "
        f"{ig['steps']} steps) sum to {ig['sum_of_contributions']:+.4f}; f(x) - f(baseline) = "
        f"{ig['expected_sum']:+.4f}; completeness gap {ig['completeness_gap']:.4f} "
        f"(tolerance {ig['tolerance']})"
        f"{'' if ig['within_tolerance'] else _NOT_COMPLETE}.</p>"
        f"{img_tag(figure([e]))}"
        f"<table><tr>{head}</tr>{''.join(rows)}</table></section>"
    )


_NOT_COMPLETE = (
    ": <b style='color:#c0392b'>not complete</b>, the output jumps along the integration path; "
    "read leave-one-out for this profile"
)
_HOW_TO_READ = (
    "<p>How to read: the line is the model's prediction after each event (as if the history "
    "ended there, scored at the end of the day). Each dot and bar is an event, coloured by its "
    "contribution: red pushed the prediction up, blue down. Contributions are integrated "
    "gradients from the baseline and add up to prediction − f(baseline). Leave-one-out is how "
    "much lower the prediction would be without that event.</p>"
)


def html_page(explanations: list[dict]) -> str:
    """A self-contained HTML page (plots inline) for one or more explanations."""
    first = explanations[0]
    title = (f"explanation · {first['date']} · model {first['model_version']} · "
             f"{first['target']}")
    return page(title, _HOW_TO_READ + "".join(_profile_html(e) for e in explanations))
