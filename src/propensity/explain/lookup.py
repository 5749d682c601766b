"""Reading what an explanation needs: a few profiles of histories(D) and the top of
predictions(D), without reading whole partitions.

The aggregation job writes each histories file sorted by profile_id, so Parquet row-group
min/max statistics let a lookup skip almost every row group: one profile costs the footers plus
the id column of one row group per file, then that row group's other columns.
"""

from __future__ import annotations

import datetime as dt
import heapq

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity import storage
from propensity.attribution.summary import HISTORY_COLUMNS, history_columns
from propensity.config import Config
from propensity.errors import BadInput, MissingInput, UsageError


def _id_column(pf: pq.ParquetFile, uri: str) -> int:
    """Index of the profile_id leaf column in a file's Parquet schema."""
    for i in range(pf.metadata.num_columns):
        if pf.metadata.schema.column(i).path == "profile_id":
            return i
    raise BadInput(f"{uri}: histories column 'profile_id' is missing")


def _id_range(pf: pq.ParquetFile, group: int, column: int) -> tuple[str, str] | None:
    """(min, max) id of a row group from its statistics; None when it has none."""
    stats = pf.metadata.row_group(group).column(column).statistics
    if stats is None or not stats.has_min_max:
        return None
    lo, hi = stats.min, stats.max
    if isinstance(lo, bytes):
        lo, hi = lo.decode("utf-8", "replace"), hi.decode("utf-8", "replace")
    return lo, hi


def _may_hold(pf: pq.ParquetFile, group: int, column: int, ids: list[str]) -> bool:
    bounds = _id_range(pf, group, column)
    return bounds is None or any(bounds[0] <= i <= bounds[1] for i in ids)


def find_histories(cfg: Config, day: dt.date, stored_ids: list[str]) -> pa.Table:
    """The histories(D) rows of the given (pseudonymised) ids, in the order given; ids not found
    are absent from the result. Refuses an incomplete partition (exit 3)."""
    files = storage.parquet_files(storage.partition(cfg.uri("histories"), day))
    remaining = set(stored_ids)
    found: list[pa.Table] = []
    for uri in files:
        if not remaining:
            break
        pf = storage.open_parquet(uri)
        column = _id_column(pf, uri)
        for group in range(pf.num_row_groups):
            wanted = sorted(remaining)
            if not wanted:
                break
            if not _may_hold(pf, group, column, wanted):
                continue
            ids = pf.read_row_group(group, columns=["profile_id"]).column(0)
            mask = pc.is_in(ids, value_set=pa.array(wanted, pa.string()))
            if not pc.any(mask).as_py():
                continue
            rows = pf.read_row_group(group, columns=history_columns(pf, uri)).filter(mask)
            found.append(rows)
            remaining -= set(rows.column("profile_id").to_pylist())
    if not found:
        return pa.table({c: [] for c in HISTORY_COLUMNS}).slice(0, 0)
    table = pa.concat_tables(found, promote_options="permissive")
    order = {pid: i for i, pid in enumerate(stored_ids)}
    keys = [order[pid] for pid in table.column("profile_id").to_pylist()]
    return table.take(np.argsort(keys, kind="stable"))


CUT = "…"  # how tables end a cut id (explain --top), so a copied prefix may end with it
_HEX = set("0123456789abcdef")


def _may_start_with(pf: pq.ParquetFile, group: int, column: int, prefix: str) -> bool:
    bounds = _id_range(pf, group, column)
    if bounds is None:
        return True
    lo, hi = bounds
    # Ids that start with the prefix sort from the prefix itself up to the end of its range.
    return hi >= prefix and (lo <= prefix or lo.startswith(prefix))


def resolve_prefix(cfg: Config, day: dt.date, given: str) -> str:
    """The one pseudonymised id of histories(D) that starts with `given` (a whole id, or a prefix
    as `explain --top` prints it, trailing ellipsis allowed). UsageError (exit 2) when it is not
    hex or several ids start with it, MissingInput (exit 3) when none does."""
    prefix = given.strip().removesuffix(CUT).removesuffix("...")
    if not prefix or not set(prefix) <= _HEX:
        raise UsageError(f"--profile {given!r} with --pseudonymised: expected a pseudonymised id "
                         "or a prefix of one (lowercase hex, as explain --top prints it)")
    matches: set[str] = set()
    for uri in storage.parquet_files(storage.partition(cfg.uri("histories"), day)):
        pf = storage.open_parquet(uri)
        column = _id_column(pf, uri)
        for group in range(pf.num_row_groups):
            if not _may_start_with(pf, group, column, prefix):
                continue
            ids = pf.read_row_group(group, columns=["profile_id"]).column(0)
            hits = ids.filter(pc.starts_with(ids, prefix)).to_pylist()
            if prefix in hits:  # a whole id is itself, whatever else it prefixes
                return prefix
            matches.update(hits)
    if not matches:
        raise MissingInput(f"--profile {prefix}: no pseudonymised id in the histories of {day} "
                           "starts with it; check the prefix and the date")
    if len(matches) > 1:
        shown = ", ".join(m[: len(prefix) + 4] + "…" for m in sorted(matches)[:3])
        raise UsageError(f"--profile {prefix}: {len(matches)} pseudonymised ids in the histories "
                         f"of {day} start with it ({shown}{', ...' if len(matches) > 3 else ''}); "
                         "give more characters")
    return matches.pop()


def top_predictions(cfg: Config, day: dt.date, target: str | None, n: int) -> tuple[str, list[dict]]:
    """(target, the `n` highest-scored rows of predictions(D) for it, highest first, as dicts
    with profile_id, score, model_version). Target None: the first score column. Streams the
    files, keeping only the top."""
    files = storage.parquet_files(storage.partition(cfg.uri("predictions"), day))
    if not files:
        raise MissingInput(f"predictions of {day} hold no Parquet file")
    best: list[tuple[float, str, str]] = []
    for uri in files:
        pf = storage.open_parquet(uri)
        targets = [c for c in pf.schema_arrow.names if c not in ("profile_id", "model_version")]
        target = target or targets[0]
        if target not in targets:
            raise UsageError(f"--target {target!r}: {uri} has scores for {', '.join(targets)}")
        for rb in pf.iter_batches(columns=["profile_id", target, "model_version"]):
            k = min(n, rb.num_rows)
            if not k:
                continue
            top = pc.select_k_unstable(rb, k, sort_keys=[(target, "descending")])
            for row in pa.Table.from_batches([rb]).take(top).to_pylist():
                if row[target] is None:
                    continue
                item = (float(row[target]), row["profile_id"], row["model_version"])
                if len(best) < n:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
    if not best:
        raise MissingInput(f"predictions of {day} hold no score for {target}")
    rows = [
        {"profile_id": p, "score": s, "model_version": v} for s, p, v in sorted(best, reverse=True)
    ]
    return target, rows
