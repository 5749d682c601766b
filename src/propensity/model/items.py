"""Item predicates of targets: which events are on the articles, brands or categories a target
names, at its minimum price. One definition for labels (what a target means) and for the model's
per-event match flags (what it reads), so the two cannot disagree.

Values are the int64 hashes the histories store (`TargetConfig.hashed`): no catalogue is needed
to label, train or score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config import ITEM_FIELDS, TargetConfig

# The history list columns a predicate reads.
ITEM_COLUMNS = [*ITEM_FIELDS.values(), "price"]


@dataclass(frozen=True)
class ItemPredicate:
    """Allowed hashes per history column (None: any value) and a minimum price, of the target
    named `target`."""

    target: str = ""
    article: tuple[int, ...] | None = None
    brand: tuple[int, ...] | None = None
    category: tuple[int, ...] | None = None
    min_price: float | None = None

    @classmethod
    def of(cls, target: TargetConfig) -> ItemPredicate:
        hashed = {column: target.hashed(field) for field, column in ITEM_FIELDS.items()}
        return cls(target=target.name,
                   **{c: None if v is None else tuple(v) for c, v in hashed.items()},
                   min_price=target.min_price)

    @property
    def on_ids(self) -> bool:
        """Whether it names articles, brands or categories (not only a minimum price)."""
        return any(getattr(self, column) is not None for column in ITEM_FIELDS.values())

    @classmethod
    def from_dict(cls, d: dict) -> ItemPredicate:
        """Inverse of `dataclasses.asdict` (as read back from model.json)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def matches(self, flat: Mapping[str, pa.Array]) -> np.ndarray:
        """Per event: whether it meets the predicate; `flat` maps each of ITEM_COLUMNS to the
        flattened list values of a histories table. A null value never matches a list."""
        n = len(flat["price"])
        hit = np.ones(n, dtype=bool)
        for column in ITEM_FIELDS.values():
            allowed = getattr(self, column)
            if allowed is not None:
                member = pc.is_in(flat[column], value_set=pa.array(allowed, pa.int64()))
                hit &= pc.fill_null(member, False).to_numpy(zero_copy_only=False)
        if self.min_price is not None:
            price = pc.fill_null(flat["price"].cast(pa.float64()), -1.0)
            hit &= price.to_numpy(zero_copy_only=False) >= self.min_price
        return hit


def flat_items(table: pa.Table | pa.RecordBatch) -> dict[str, pa.Array]:
    """The flattened ITEM_COLUMNS of a histories table."""
    out = {}
    for column in ITEM_COLUMNS:
        col = table.column(column)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        out[column] = col.flatten()
    return out
