"""The article catalogue of the synthetic shop: Zipf popularity, brands, categories, prices.

New articles are released every day and get a novelty boost that fades over about a week, so
the popular set drifts while the long tail stays long. Profiles browse within categories and
favourite brands (`generate.World`), so a day's popularity is also kept per (category, brand)
cell (`Popularity`): sampling by popularity within a cell, and the exact share of a cell's
popularity that an item target matches, both read it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CATEGORIES = (
    "sneakers", "boots", "sandals", "dresses", "shirts", "t-shirts", "jeans", "trousers",
    "jackets", "coats", "knitwear", "sportswear", "underwear", "swimwear", "bags", "watches",
    "jewellery", "sunglasses", "hats", "scarves", "beauty", "fragrance", "home-textiles",
    "kids-shoes", "kids-clothing",
)  # fmt: skip
ZIPF_ARTICLES = 1.05  # popularity exponent over article rank
ZIPF_BRANDS = 1.1
NOVELTY_BOOST = 3.0  # a new article starts this much above its base popularity
NOVELTY_DAYS = 5.0  # e-folding time of the boost


class Catalogue:
    """All articles the run will ever release, with the day each appears."""

    def __init__(self, rng: np.random.Generator, profiles: int, days: int):
        self.initial = int(np.clip(profiles // 8, 1_000, 200_000))
        self.per_day = max(20, self.initial // 50)
        n = self.initial + self.per_day * days
        self.release = np.concatenate(
            [np.zeros(self.initial, np.int32), np.repeat(np.arange(1, days + 1), self.per_day)]
        ).astype(np.int32)[:n]
        rank = rng.permutation(n)
        self.base_weight = 1.0 / (rank + 10.0) ** ZIPF_ARTICLES
        n_brands = int(np.clip(n // 40, 20, 3_000))
        brand_w = 1.0 / np.arange(1, n_brands + 1) ** ZIPF_BRANDS
        self.brand = rng.choice(n_brands, size=n, p=brand_w / brand_w.sum()).astype(np.int32)
        cat_w = 1.0 / np.arange(1, len(CATEGORIES) + 1) ** 0.8
        self.category = rng.choice(len(CATEGORIES), size=n, p=cat_w / cat_w.sum()).astype(np.int32)
        # Prices: a level per category and per brand, then per article; shop-style x.99 prices.
        cat_level = rng.lognormal(3.4, 0.6, len(CATEGORIES))
        brand_level = rng.lognormal(0.0, 0.4, n_brands)
        raw = cat_level[self.category] * brand_level[self.brand] * rng.lognormal(0.0, 0.3, n)
        self.price = np.maximum(np.round(raw), 2.0) - 0.01
        width = len(str(n - 1))
        self.article_ids = _ids("a", n, max(width, 7))
        self.brand_ids = _ids("b", n_brands, max(len(str(n_brands - 1)), 4))
        self.category_names = pa.array(CATEGORIES)
        self.n_brands = n_brands
        # Articles sorted by (category, brand) cell, and where each cell starts in that order.
        cell = self.category.astype(np.int64) * n_brands + self.brand
        self.by_cell = np.argsort(cell, kind="stable")
        self.cell_start = np.searchsorted(
            cell[self.by_cell], np.arange(len(CATEGORIES) * n_brands + 1)
        )
        # The categories' share of base popularity: the mean of the profiles' preferences.
        self.category_share = (
            np.bincount(self.category, weights=self.base_weight, minlength=len(CATEGORIES))
            / self.base_weight.sum()
        )
        self.brand_share = (
            np.bincount(self.brand, weights=self.base_weight, minlength=n_brands)
            / self.base_weight.sum()
        )

    def __len__(self) -> int:
        return len(self.release)

    def weights(self, day: int) -> np.ndarray:
        """Popularity of every article on `day` (0-based): 0 before its release. After the
        run's last day nothing new is released (truth horizons reach past it)."""
        age = day - self.release
        w = np.where(age >= 0, self.base_weight, 0.0)
        return w * (1.0 + NOVELTY_BOOST * np.exp(-np.maximum(age, 0) / NOVELTY_DAYS))

    def popularity(self, day: int) -> Popularity:
        """The popularity of `day` by (category, brand) cell, for sampling and match shares."""
        return Popularity(self, self.weights(day))


class Popularity:
    """One day's article popularity, arranged for sampling within a category or a cell."""

    def __init__(self, catalogue: Catalogue, weights: np.ndarray):
        self.cat = catalogue
        self.weights = weights
        # mass[k]: popularity of the first k articles in cell order (mass[0] = 0).
        self.mass = np.concatenate([[0.0], np.cumsum(weights[catalogue.by_cell])])
        self.cells = self.cell_mass(np.ones(len(weights), bool))

    def cell_mass(self, articles: np.ndarray) -> np.ndarray:
        """(categories, brands): popularity of the `articles` (a boolean mask) in each cell."""
        c = self.cat
        keys = c.category.astype(np.int64) * c.n_brands + c.brand
        flat = np.bincount(
            keys,
            weights=np.where(articles, self.weights, 0.0),
            minlength=len(CATEGORIES) * c.n_brands,
        )
        return flat.reshape(len(CATEGORIES), c.n_brands)

    def sample_in_cells(
        self, rng: np.random.Generator, first: np.ndarray, last: np.ndarray
    ) -> np.ndarray:
        """One article per pair of cell numbers (category * brands + brand), by popularity among
        the articles of cells first..last-1 (a category is a run of cells), each with mass > 0."""
        lo, hi = self.cat.cell_start[first], self.cat.cell_start[last]
        x = self.mass[lo] + rng.random(len(lo)) * (self.mass[hi] - self.mass[lo])
        pos = np.clip(np.searchsorted(self.mass, x, side="right") - 1, lo, hi - 1)
        return self.cat.by_cell[pos].astype(np.int32)


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    """Zero-padded string ids `prefix0000123` for 0..n-1."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")
