"""Which truth columns a run writes: the config's order targets, with their item predicates
evaluated on the synthetic catalogue.

The planted model knows order probabilities only, so a target gets a truth column when its
`event_types` is `[order]`. Its item predicates (raw categories, brands, article ids, a minimum
price) become a mask over the catalogue's articles: an order matches when its article is in it,
exactly as the labels match the hashed values of the order event (`model/labels.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config import TargetConfig
from propensity.events.catalogue import CATEGORIES, Catalogue
from propensity.ui import kv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TruthTarget:
    """A truth column: P(an order within `horizon_days`), on matching articles where given."""

    column: str  # p_<target>
    horizon_days: int
    categories: tuple[str, ...] | None = None
    brands: tuple[str, ...] | None = None
    articles: tuple[str, ...] | None = None
    min_price: float | None = None

    @property
    def on_items(self) -> bool:
        return any(
            v is not None for v in (self.categories, self.brands, self.articles, self.min_price)
        )

    @property
    def categories_only(self) -> bool:
        """Only categories restrict the items: the observable oracle is exact for these."""
        return (
            self.categories is not None
            and self.on_items
            and all(v is None for v in (self.brands, self.articles, self.min_price))
        )

    def mask(self, catalogue: Catalogue) -> np.ndarray:
        """Per article of the catalogue: whether an order of it matches."""
        hit = np.ones(len(catalogue), bool)
        if self.categories is not None:
            known = [CATEGORIES.index(c) for c in self.categories if c in CATEGORIES]
            hit &= np.isin(catalogue.category, known)
        if self.brands is not None:
            hit &= np.isin(catalogue.brand, _indices(catalogue.brand_ids, self.brands))
        if self.articles is not None:
            hit &= np.isin(
                np.arange(len(catalogue)), _indices(catalogue.article_ids, self.articles)
            )
        if self.min_price is not None:
            hit &= catalogue.price >= self.min_price
        return hit

    def describe(self) -> dict:
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(self).items()
            if v is not None
        }


def _indices(ids: pa.Array, values: tuple[str, ...]) -> np.ndarray:
    """Positions of the values among the ids (values not in the catalogue left out)."""
    where = pc.index_in(pa.array(values, pa.string()), value_set=ids)
    return where.drop_null().to_numpy().astype(np.int64)


def truth_targets(targets: list[TargetConfig]) -> list[TruthTarget]:
    """The truth columns of the config's targets; the others are logged with the reason."""
    out = []
    for t in targets:
        if list(t.event_types) != ["order"]:
            log.warning(kv(target=t.name, truth="none", reason="not an order target"))
            continue
        items = {
            f: tuple(getattr(t, f))
            for f in ("categories", "brands", "articles")
            if getattr(t, f) is not None
        }
        unknown = sorted(set(items.get("categories", ())) - set(CATEGORIES))
        if unknown:
            log.warning(
                kv(
                    target=t.name,
                    unknown_categories=",".join(unknown),
                    reason="the generator never sends these",
                )
            )
        out.append(TruthTarget(f"p_{t.name}", t.horizon_days, min_price=t.min_price, **items))
    return out
