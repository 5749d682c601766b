"""The ground truth of a run, day by day: exact probabilities per truth column, the observable
oracle's beside them, and, once a day's horizon has been simulated, their scores against the
orders that then happened.

Any-order columns come from the planted chain alone (`behaviour.order_probability`). An item
target's column also needs, for every day of its horizon, each profile's probability m that an
order's article matches (`World.match_share`, exact from the profile's preferences and that
day's popularity): computed once per day for all profiles and kept while some horizon needs it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from propensity.events import behaviour as bm
from propensity.events.catalogue import CATEGORIES, Popularity
from propensity.events.oracle import MatchPosterior, ObservableOracle, Observed
from propensity.events.targets import TruthTarget

if TYPE_CHECKING:  # generate imports this module; World is only a type here
    from propensity.events.generate import World

SUMMARY_HORIZON = 7  # the any-order horizon of the summary's long-standing fields
SUMMARY_COLUMN = "_order_7d"  # internal key of that score's predictions (never written)
BLOCK = 50_000  # profiles per block when computing match shares for all of them


@dataclass
class Open:
    """A day's predictions of one column, waiting for its horizon to be simulated."""

    day: int
    column: str | None  # None: the summary's any-order 7-day score
    horizon: int
    idx: np.ndarray  # profiles
    truth: np.ndarray
    observable: np.ndarray | None
    mask: np.ndarray | None  # articles an order must be of (None: any)


class Truth:
    """Truth columns of every target, for the profiles of one chunk at a time (`chunk`), with
    the observable oracle's where one is given; `end_day` hands over a day's columns."""

    def __init__(self, world: World, targets: list[TruthTarget], oracle: ObservableOracle | None):
        self.world, self.targets, self.oracle = world, targets, oracle
        self.ahead, _ = Truth.horizons(targets)
        self.items = [t for t in targets if t.on_items]
        self.masks = {t.column: t.mask(world.catalogue) for t in self.items}
        world.item_masks = [self.masks[t.column] for t in self.items]
        self.posteriors = (
            [MatchPosterior(len(world.affinity), *match_prior(world, t, self.masks[t.column]))
             for t in self.items]
            if oracle else []
        )  # fmt: skip
        self._pop: dict[int, Popularity] = {}
        self._share: dict[tuple[str, int], np.ndarray] = {}
        self.open: list[Open] = []

    @staticmethod
    def horizons(targets: list[TruthTarget]) -> tuple[list[int], list[int]]:
        """The oracle's any-order horizons (the summary's 7 among them) and item horizons."""
        ahead = sorted({SUMMARY_HORIZON, *(t.horizon_days for t in targets if not t.on_items)})
        return ahead, [t.horizon_days for t in targets if t.on_items]

    def begin_day(self, d: int, weekday: int) -> None:
        self.day = d
        self.columns: dict[str, list[np.ndarray]] = defaultdict(list)  # per column, per chunk
        self.idx: list[np.ndarray] = []
        self._pop = {k: v for k, v in self._pop.items() if k > d}
        self._share = {k: v for k, v in self._share.items() if k[1] > d}
        if self.oracle:
            self.oracle.begin_day(d, weekday)

    def chunk(
        self,
        lo: int,
        seen: np.ndarray,
        state: np.ndarray,
        ordered: np.ndarray,
        affinity: np.ndarray,
        first_weekday: int,
    ) -> None:
        """Truth at the end of the day for profiles lo+seen (their state, order, affinity);
        the oracle's after it has observed the chunk's day (`observe`)."""
        idx = lo + seen
        self.idx.append(idx)
        args = (state, ordered, affinity, first_weekday)
        any_order = {h: bm.order_probability(*args, h) for h in self.ahead}
        self.columns[SUMMARY_COLUMN].append(any_order[SUMMARY_HORIZON])
        for t in self.targets:
            if t.on_items:
                match = np.column_stack(
                    [self.share(t, self.day + k)[idx] for k in range(1, t.horizon_days + 1)]
                )
                p = bm.order_probability(*args, t.horizon_days, match)
            else:
                p = any_order[t.horizon_days]
            self.columns[t.column].append(p)
        if self.oracle:
            moments = [
                post.moments(idx, t.horizon_days) for post, t in zip(self.posteriors, self.items)
            ]
            p = self.oracle.predict(lo, seen, moments)
            ahead = self.ahead
            self.columns[SUMMARY_COLUMN + "_observable"].append(p[:, ahead.index(SUMMARY_HORIZON)])
            k = 0
            for t in self.targets:
                if t.on_items:
                    col = len(ahead) + k
                    k += 1
                else:
                    col = ahead.index(t.horizon_days)
                self.columns[f"{t.column}_observable"].append(p[:, col])

    def observe(self, lo: int, hi: int, observed: Observed) -> None:
        """The chunk's day as its histories show it, for the oracle and the match posteriors."""
        if not self.oracle:
            return
        self.oracle.observe(lo, hi, observed)
        for k, post in enumerate(self.posteriors):
            post.observe(lo, hi, observed.draws, observed.matching[:, k])

    def end_day(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The day's profiles and truth columns (truth columns first, then the observable ones);
        the day's predictions wait in `open` for `matured`."""
        idx = np.concatenate(self.idx)
        cols = {k: np.concatenate(v) for k, v in self.columns.items()}
        observable = cols.get(SUMMARY_COLUMN + "_observable")
        self.open.append(
            Open(self.day, None, SUMMARY_HORIZON, idx, cols[SUMMARY_COLUMN], observable, None)
        )
        for t in self.targets:
            self.open.append(
                Open(
                    self.day,
                    t.column,
                    t.horizon_days,
                    idx,
                    cols[t.column],
                    cols.get(f"{t.column}_observable"),
                    self.masks.get(t.column),
                )
            )
        out = {t.column: cols[t.column] for t in self.targets}
        if self.oracle:
            out.update(
                {f"{t.column}_observable": cols[f"{t.column}_observable"] for t in self.targets}
            )
        return idx, out

    def matured(self, d: int):
        """(open prediction, realised labels) of every open one whose horizon ends by day d."""
        ring = self.world.order_article
        for o in [o for o in self.open if d - o.day >= o.horizon]:
            self.open.remove(o)
            rows = [(o.day + k) % len(ring) for k in range(1, o.horizon + 1)]
            art = ring[rows][:, o.idx]
            hit = art >= 0
            if o.mask is not None:
                hit &= o.mask[np.maximum(art, 0)]
            yield o, hit.any(axis=0)

    def share(self, t: TruthTarget, day: int) -> np.ndarray:
        """m of every profile for target t's orders on `day` (cached while horizons need it)."""
        key = (t.column, day)
        if key not in self._share:
            if day not in self._pop:
                self._pop[day] = self.world.catalogue.popularity(day)
            self._share[key] = all_shares(self.world, self._pop[day], self.masks[t.column])
        return self._share[key]

    def describe(self) -> list[dict]:
        """The truth targets, with how the observable oracle treats each, for generator.json."""
        posts = dict(zip([t.column for t in self.items], self.posteriors))
        out = []
        for t in self.targets:
            d = t.describe()
            if t.column in posts:
                d["match_posterior"] = posts[t.column].describe()
            out.append(d)
        return out


def all_shares(world: World, pop: Popularity, mask: np.ndarray) -> np.ndarray:
    """`World.match_share` of every profile, in blocks (bounded temporaries)."""
    matched = pop.cell_mass(mask)
    n = len(world.affinity)
    return np.concatenate(
        [world.match_share(pop, matched, lo, min(n, lo + BLOCK)) for lo in range(0, n, BLOCK)]
    )


def match_prior(world: World, t: TruthTarget, mask: np.ndarray) -> tuple[float, float, bool]:
    """Beta prior (a, b) of a profile's match share m for the oracle, and whether it is exact.

    Categories only: m is the preference mass on them, Beta(c pi, c (1 - pi)) with c the
    Dirichlet's concentration and pi the categories' popularity share. Otherwise a Beta with
    the mean and variance of the profiles' m on the first day.
    """
    c = bm.PREFERENCE_CONCENTRATION
    if t.categories_only:
        share = world.catalogue.category_share
        pi = float(sum(share[CATEGORIES.index(x)] for x in set(t.categories) if x in CATEGORIES))
        return c * pi, c * (1.0 - pi), True
    m = all_shares(world, world.catalogue.popularity(0), mask)
    mean, var = float(m.mean()), float(m.var())
    if var <= 1e-12 or mean <= 0.0 or mean >= 1.0:  # (nearly) the same m for everyone
        return mean * 1e6, (1.0 - mean) * 1e6, False
    total = mean * (1.0 - mean) / var - 1.0
    return mean * total, (1.0 - mean) * total, False


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN without both classes."""
    pos = int(label.sum())
    neg = len(label) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    mid_rank = upper - (counts - 1) / 2.0  # average 1-based rank of each distinct score
    ranks = mid_rank[inverse]
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))
