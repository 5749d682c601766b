"""The article catalogue of the synthetic shop: Zipf popularity, brands, categories, prices.

New articles are released every day and get a novelty boost that fades over about a week, so
the popular set drifts while the long tail stays long.
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

    def __len__(self) -> int:
        return len(self.release)

    def cumulative_weights(self, day: int) -> np.ndarray:
        """Cumulative popularity of the articles released by `day` (0-based), for sampling."""
        age = day - self.release
        w = np.where(age >= 0, self.base_weight, 0.0)
        w = w * (1.0 + NOVELTY_BOOST * np.exp(-np.maximum(age, 0) / NOVELTY_DAYS))
        return np.cumsum(w)

    def sample(self, rng: np.random.Generator, cum: np.ndarray, n: int) -> np.ndarray:
        """n article indices drawn by popularity (`cum` from `cumulative_weights`)."""
        idx = np.searchsorted(cum, rng.random(n) * cum[-1], side="right")
        return np.minimum(idx, len(cum) - 1).astype(np.int32)


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    """Zero-padded string ids `prefix0000123` for 0..n-1."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")
