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


def _summary_table(meta: dict):
    """What people look for in a model.json: data, metrics against baseline and champion, the
    gate's decision and its reasons."""
    from rich.table import Table

    gate = meta.get("gate") or {}
    data = meta.get("data") or {}
    table = Table(title=f"model {meta['version']}", show_header=False)
    table.add_row("trained for", f"{meta.get('training_date')} (inputs {data.get('input_date')}, "
                  f"{len(data.get('snapshot_pairs') or [1])} snapshot pairs)")
    table.add_row("start", f"warm from {meta['parent_version']}" if meta.get("warm_start")
                  else "cold")
    table.add_row("examples", f"{data.get('train_examples')} train, "
                  f"{data.get('validation_examples')} validation, "
                  f"{data.get('gate_examples', data.get('validation_examples'))} gate rows")
    table.add_row("gate", f"{gate.get('decision', 'not gated')}"
                  + "".join(f"\n{r}" for r in gate.get("reasons", [])))
    base = (meta.get("baseline") or {}).get("metrics", {})
    for target, m in (meta.get("metrics") or {}).items():
        line = f"AUROC {_num(m.get('auroc'))}, AP {_num(m.get('average_precision'))}, " \
               f"baseline AUROC {_num(base.get(target, {}).get('auroc'))}"
        for against, c in (gate.get("comparisons") or {}).get(target, {}).items():
            low, high = c["interval"]
            line += f"\nvs {against}: {c['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"
        table.add_row(target, line)
    table.add_row("champion then", str(gate.get("champion_version") or "none"))
    table.add_row("created", f"{meta.get('created_at')} (code {meta.get('code_version')})")
    return table


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


@app.command("show")
def show(
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="Version name, e.g. 2026-01-20.1.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole model.json.")] = False,
    config: ConfigOption = None,
    sets: SetOption = None,
) -> None:
    """Summarise a version (metrics, baseline, gate, data) and verify its weights (exit 4 if
    tampered or truncated); --json prints the whole model.json.

    Example: propensity models show 2026-01-20.1
    """
    cfg = load(config, sets)
    meta = store.read_metadata(cfg, version)
    if as_json:
        typer.echo(json.dumps(meta, indent=2, sort_keys=True, default=str))
    else:
        _stdout().print(_summary_table(meta))
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
