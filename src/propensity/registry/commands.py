"""`propensity models list | show VERSION | promote VERSION | rollback`: the registry for people.

promote and rollback only move the champion pointer (`models/<name>/champion.json`, one atomic
write) and record who (`--by`, else $USER) and why (`--reason`) in its history.
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from propensity.cli_options import ConfigOption, SetOption, load
from propensity.registry import store

app = typer.Typer(help="List, inspect, promote and roll back model versions.", no_args_is_help=True)

ReasonOption = Annotated[
    str,
    typer.Option("--reason", "-r", metavar="TEXT",
                 help="Why the pointer moves (kept in champion.json)."),
]
ByOption = Annotated[
    Optional[str],
    typer.Option("--by", metavar="NAME", show_default=False,
                 help="Who moves the pointer (default: $USER)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _stdout():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _auc_text(meta: dict) -> str:
    metrics = meta.get("metrics") or {}
    return " ".join(f"{t}={m['auroc']:.4f}" for t, m in metrics.items() if "auroc" in m)


@app.command("list")
def list_versions(
    as_json: JsonOption = False, config: ConfigOption = None, sets: SetOption = None
) -> None:
    """List model versions with dates, metrics and gate decisions (* = champion).

    Example: propensity models list --json
    """
    from rich.table import Table

    cfg = load(config, sets)
    champion = store.champion_version(cfg)
    rows = [store.read_metadata(cfg, v) for v in store.version_names(cfg)]
    if as_json:
        typer.echo(json.dumps({"champion": champion, "versions": rows}, indent=2, default=str))
        return
    table = Table(title=f"models/{cfg.model.name}  (champion: {champion or 'none'})")
    for col in ("", "version", "trained for", "created", "val AUROC", "gate", "parent"):
        table.add_column(col)
    for meta in rows:
        table.add_row(
            "*" if meta["version"] == champion else "",
            meta["version"],
            str(meta.get("training_date", "")),
            str(meta.get("created_at", ""))[:19],
            _auc_text(meta),
            (meta.get("gate") or {}).get("decision", ""),
            meta.get("parent_version") or "",
        )
    _stdout().print(table)


def _dates(pairs: list[dict], key: str) -> str:
    days = sorted(p[key] for p in pairs if p.get(key))
    if not days:
        return "n/a"
    return days[0] if days[0] == days[-1] else f"{days[0]} .. {days[-1]}"


def _summary_table(meta: dict, champion: str | None):
    """What people look for in a model.json, one row each: data dates, metrics against the
    baseline and the champion of the day, the gate's decision and reasons, parent, status."""
    from rich.table import Table
    from rich.text import Text

    gate = meta.get("gate") or {}
    data = meta.get("data") or {}
    pairs = data.get("snapshot_pairs") or [{"input_date": data.get("input_date")}]
    table = Table(title=f"model {meta['version']}", show_header=False)

    def row(label: str, value: str) -> None:
        table.add_row(label, Text(value))  # plain text: "[low, high]" is not rich markup

    row("status", "champion" if meta["version"] == champion
        else f"not the champion ({champion or 'none'} is)")
    row("trained for", str(meta.get("training_date")))
    row("data", f"inputs {_dates(pairs, 'input_date')}, labels "
        f"{_dates(pairs, 'label_date')} ({len(pairs)} snapshot pairs)")
    row("examples", f"{data.get('train_examples')} train, "
        f"{data.get('validation_examples')} validation, "
        f"{data.get('gate_examples', data.get('validation_examples'))} gate rows")
    row("parent", f"{meta['parent_version']} (warm start)" if meta.get("warm_start")
        else "none (cold start)")
    training = meta.get("training") or {}
    if "best_epoch" in training:
        best = training["best_epoch"]
        kept = "the starting point" if best == -1 else f"epoch {best}"
        deep = training.get("deep_part") or {}
        row("training", f"kept {kept} of {training.get('epochs_run')} epochs run" + "".join(
            f"\n{t}: deep part {'on' if on else 'off'}" for t, on in deep.items()))
    row("gate", f"{gate.get('decision', 'not gated')}"
        + "".join(f"\n{r}" for r in gate.get("reasons", [])))
    row("champion then", str(gate.get("champion_version") or "none"))
    base = (meta.get("baseline") or {}).get("metrics", {})
    for target, m in (meta.get("metrics") or {}).items():
        line = (f"AUROC {_num(m.get('auroc'))}, AP {_num(m.get('average_precision'))}; "
                f"baseline AUROC {_num(base.get(target, {}).get('auroc'))}")
        for against, c in (gate.get("comparisons") or {}).get(target, {}).items():
            low, high = c.get("interval") or (None, None)
            line += (f"\nvs {against}: {_signed(c.get('difference'))} "
                     f"[{_signed(low)}, {_signed(high)}]")
        row(target, line)
    row("created", f"{meta.get('created_at')} (code {meta.get('code_version')})")
    return table


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _signed(x) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


@app.command("show")
def show(
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="Version name, e.g. 2026-01-20.1.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole model.json.")] = False,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Summarise a version (status, data dates, examples, parent, gate decision and reasons,
    metrics against the baseline and the champion it was gated against) and verify its weights
    (exit 4 if tampered or truncated; exit 3 if there is no such version); --json prints the
    whole model.json instead of the table.

    Example: propensity models show 2026-01-20.1
    """
    cfg = load(config, sets)
    meta = store.read_metadata(cfg, version)
    if as_json:
        typer.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))
    else:
        _stdout().print(_summary_table(meta, store.champion_version(cfg)))
    store.read_weights(cfg, version, meta)
    typer.echo(f"weights sha256 verified: {meta['weights']['sha256']}", err=True)


@app.command("promote")
def promote(
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="Version to make the champion.")
    ],
    reason: ReasonOption = "manual promotion",
    by: ByOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even a version the gate rejected.")
    ] = False,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Make VERSION the champion (scoring uses it from the next run).

    Example: propensity models promote 2026-01-13.1 --reason "restore after a bad retrain"
    """
    cfg = load(config, sets)
    move = store.promote(cfg, version, by, reason, force=force)
    before = move["from"] or "none"
    typer.echo(f"champion: {before} -> {move['version']} (by {move['by']}: {reason})")


@app.command("rollback")
def rollback(
    reason: ReasonOption = "manual rollback",
    by: ByOption = None,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Point the champion back at the previous champion: each call undoes one promotion, newest
    first; exit 3 at the start of the promotion history.

    Example: propensity models rollback --reason "drift alert after the 2026-01-20 retrain"
    """
    cfg = load(config, sets)
    move = store.rollback(cfg, by, reason)
    typer.echo(f"champion: {move['from']} -> {move['version']} (by {move['by']}: {reason})")
