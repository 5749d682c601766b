"""The planted behaviour model of the synthetic stream, and its exact order probabilities.

Every profile carries a latent purchase intent, a Markov chain over days with the states below.
The state of day d sets how many sessions the profile has that day, what those sessions hold
(more carts, checkouts and wishlists when intent is high, returns after an order), and the
probability q(s, d) that it orders that day. An order sends the profile to `cooldown`.

Because the chain is known, the probability that a profile orders at least once in the H days
after day D, given its state and order on D, is computed exactly by a backward recursion over
the H days (`order_probability`), not by simulation: that is the ground truth the generator
writes beside the events. Histories only show the events, so the truth is an upper bound on
what a model can reach.

Item targets ("an order in these categories / of these brands"): each order's article is one
draw from the profile's browsing distribution of that day (`generate.World`: its category
preference and favourite brands), so it matches a target with a probability m(i, d) known
exactly from the profile's traits and the day's popularity. A day then ends in one of three
ways: no order (1 - q, then `STAY`), a non-matching order (q (1 - m), then `AFTER_ORDER`), a
matching one (q m). The same backward recursion with those weights gives the truth
(`no_match_survival`); as a polynomial in (1 - m) (`no_match_survival_poly`) it lets the
observable oracle integrate m over its posterior exactly.
"""

from __future__ import annotations

import numpy as np

STATES = ("dormant", "browsing", "interested", "buying", "cooldown")
DORMANT, BROWSING, INTERESTED, BUYING, COOLDOWN = range(5)

# Day-to-day transitions on a day without an order (row: today's state, column: tomorrow's).
STAY = np.array(
    [
        [0.94, 0.05, 0.01, 0.00, 0.00],  # dormant: mostly stays away
        [0.12, 0.70, 0.15, 0.03, 0.00],  # browsing
        [0.06, 0.20, 0.52, 0.22, 0.00],  # interested
        [0.04, 0.12, 0.24, 0.60, 0.00],  # buying
        [0.10, 0.12, 0.00, 0.00, 0.78],  # cooldown wears off slowly
    ]
)
# Transitions on a day with an order: mostly a cool-down, sometimes straight back to shopping.
AFTER_ORDER = np.array(
    [
        [0.00, 0.00, 0.00, 0.00, 1.00],
        [0.00, 0.05, 0.00, 0.00, 0.95],
        [0.00, 0.05, 0.05, 0.00, 0.90],
        [0.00, 0.05, 0.05, 0.05, 0.85],
        [0.00, 0.05, 0.00, 0.00, 0.95],
    ]
)
# Order hazard per day (rate of a Poisson clock, at buyer affinity 1 and weekday weight 1).
ORDER_RATE = np.array([0.0003, 0.003, 0.02, 0.25, 0.001])
# Mean sessions per day at activity 1 and weekday weight 1.
SESSION_RATE = np.array([0.05, 0.45, 0.8, 1.2, 0.3])
# Mean events per session (geometric, at least one), before the order funnel is added; a run's
# means are these times its `--session-events` factor (`events_per_session`).
EVENTS_PER_SESSION = np.array([2.5, 4.0, 6.0, 7.0, 3.0])
# Largest `--session-events` factor: it bounds a day's events in memory. Measured: at 20 a chunk
# of 50,000 profiles has about 2.4 million events a day (at 1: 120,000), and simulating it peaks
# near 1.6 GB (at 8: 1.0 million, 0.7 GB).
SESSION_EVENTS_MAX = 20.0

# Event types a session draws from (orders come only from the order clock, as a funnel).
SESSION_TYPES = (
    "view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "wishlist",
    "checkout",
    "return",
    "page_ping",  # not in the vocabulary: a valid record the aggregator maps to `other`
)
# Relative mix of session event types per state, columns as SESSION_TYPES (normalised below).
MIX = np.array(
    [
        [0.70, 0.22, 0.02, 0.005, 0.015, 0.000, 0.000, 0.02],  # dormant
        [0.64, 0.22, 0.06, 0.020, 0.035, 0.005, 0.000, 0.02],  # browsing
        [0.55, 0.15, 0.14, 0.040, 0.090, 0.015, 0.000, 0.015],  # interested
        [0.46, 0.10, 0.22, 0.060, 0.080, 0.065, 0.000, 0.015],  # buying
        [0.62, 0.16, 0.03, 0.010, 0.030, 0.000, 0.130, 0.02],  # cooldown: returns
    ]
)
MIX = MIX / MIX.sum(axis=1, keepdims=True)
# State of the profiles present on the first day, and of profiles arriving later.
INITIAL_PRESENT = np.array([0.45, 0.30, 0.13, 0.05, 0.07])
INITIAL_NEW = np.array([0.00, 0.60, 0.30, 0.10, 0.00])

# Weekday weight (Monday first) on sessions and the order hazard: a Sunday peak.
WEEKDAY = np.array([1.00, 0.92, 0.92, 0.97, 1.03, 1.05, 1.30])
# Relative share of session starts per UTC hour: a night trough and an evening peak.
HOUR = np.array(
    [0.9, 0.5, 0.3, 0.2, 0.2, 0.3, 0.7, 1.5, 2.2, 2.6, 2.8, 3.0, 3.4, 3.2, 3.0, 3.0, 3.2, 3.6, 4.4,
     5.4, 6.0, 5.6, 4.0, 2.0]
)  # fmt: skip
HOUR = HOUR / HOUR.sum()

# Preferences: per profile a Dirichlet draw over categories around the catalogue's category
# popularity (a total concentration of 2 puts most of a profile's mass on two to four
# categories), and favourite brands whose articles weigh BRAND_BOOST + 1 times their popularity
# within a category.
PREFERENCE_CONCENTRATION = 2.0
FAVOURITE_BRANDS = 3  # drawn by brand popularity, with replacement
BRAND_BOOST = 12.0

ACTIVITY_SIGMA = 1.3  # lognormal spread of per-profile activity: the heavy tail
AFFINITY_SIGMA = 1.0  # lognormal spread of per-profile buyer affinity


def events_per_session(factor: float = 1.0) -> np.ndarray:
    """Mean events per session by state in a stream `factor` times as dense as the planted one
    (1: EVENTS_PER_SESSION itself). ValueError naming `--session-events` unless every mean stays
    above one event (a geometric count is at least one) and `factor` <= SESSION_EVENTS_MAX."""
    low = 1.0 / EVENTS_PER_SESSION.min()
    if not low < factor <= SESSION_EVENTS_MAX:  # NaN fails too
        raise ValueError(
            f"--session-events must be a factor above {low:g} (every state's mean of "
            f"{EVENTS_PER_SESSION.tolist()} events per session times it stays above one event) "
            f"and at most {SESSION_EVENTS_MAX:g}, not {factor:g}"
        )
    return EVENTS_PER_SESSION * factor


def order_hazard(affinity: np.ndarray, weekday: int) -> np.ndarray:
    """q[i, s]: probability that profile i in state s orders on a day with this weekday."""
    return 1.0 - np.exp(-np.outer(affinity, ORDER_RATE) * WEEKDAY[weekday])


def next_state_probs(state: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Distribution of tomorrow's state (rows) given today's state and whether one ordered."""
    return np.where(ordered[:, None], AFTER_ORDER[state], STAY[state])


def no_order_survival(affinity: np.ndarray, first_weekday: int, days: int) -> np.ndarray:
    """u[i, s]: probability that profile i, in state s on D+1, does not order in D+1..D+days.

    `first_weekday` is the weekday of D+1. Backward recursion over the horizon, from its last day.
    """
    rate = np.outer(affinity, ORDER_RATE)
    u = np.ones((len(affinity), len(STATES)))
    for k in range(days, 0, -1):
        if k < days:
            # No order today, then tomorrow's chain (the no-order rows). einsum, not a BLAS
            # call: the matrix is 5x5, and BLAS threads only add overhead here.
            u = np.einsum("it,st->is", u, STAY)
        u *= np.exp(-rate * WEEKDAY[(first_weekday + k - 1) % 7])  # survival of day k
    return u


def no_match_survival(
    affinity: np.ndarray, first_weekday: int, days: int, match: np.ndarray
) -> np.ndarray:
    """u[i, s]: probability that profile i, in state s on D+1, places no matching order in
    D+1..D+days, where match[i, k-1] is the probability that its order of day D+k matches.

    A non-matching order is a day survived that moves the chain by `AFTER_ORDER`; with match 1
    this is `no_order_survival`.
    """
    rate = np.outer(affinity, ORDER_RATE)
    u = np.ones((len(affinity), len(STATES)))
    for k in range(days, 0, -1):
        stay = np.exp(-rate * WEEKDAY[(first_weekday + k - 1) % 7])  # no order on day k
        miss = (1.0 - stay) * (1.0 - match[:, k - 1 : k])  # an order, not matching
        if k < days:
            u = stay * np.einsum("it,st->is", u, STAY) + miss * np.einsum(
                "it,st->is", u, AFTER_ORDER
            )
        else:
            u = stay + miss
    return u


def no_match_survival_poly(affinity: np.ndarray, first_weekday: int, days: int) -> np.ndarray:
    """c[i, s, j]: `no_match_survival` for a match probability m constant over the horizon, as a
    polynomial in x = 1 - m: u[i, s] = sum_j c[i, s, j] x**j (degree `days`; c[..., 0] is the
    survival of any order). Lets a posterior over m be integrated by its moments."""
    rate = np.outer(affinity, ORDER_RATE)
    c = np.zeros((len(affinity), len(STATES), days + 1))
    c[:, :, 0] = 1.0
    for k in range(days, 0, -1):
        stay = np.exp(-rate * WEEKDAY[(first_weekday + k - 1) % 7])[:, :, None]
        if k < days:
            after = np.einsum("itj,st->isj", c, AFTER_ORDER)
            c = np.einsum("itj,st->isj", c, STAY)
        else:
            after = c.copy()
        c = stay * c
        c[:, :, 1:] += (1.0 - stay) * after[:, :, :-1]  # times x: the order did not match
    return c


def order_probability(
    state: np.ndarray,
    ordered: np.ndarray,
    affinity: np.ndarray,
    first_weekday: int,
    days: int,
    match: np.ndarray | None = None,
) -> np.ndarray:
    """P(at least one order in days D+1..D+days | state and order of day D), exactly; with
    `match` (profiles, days): of at least one matching order (`no_match_survival`).

    `first_weekday` is the weekday of D+1: tomorrow's state distribution against the
    probability of no (matching) order from each state.
    """
    if match is None:
        u = no_order_survival(affinity, first_weekday, days)
    else:
        u = no_match_survival(affinity, first_weekday, days, match)
    none = np.einsum("is,is->i", next_state_probs(state, ordered), u)
    return 1.0 - none


def check() -> None:
    """The tables are distributions (guards edits of the constants)."""
    for name, m in (("STAY", STAY), ("AFTER_ORDER", AFTER_ORDER), ("MIX", MIX)):
        if not np.allclose(m.sum(axis=1), 1.0):
            raise AssertionError(f"{name} rows must sum to 1")


check()
