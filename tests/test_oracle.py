"""The observable oracle: exact on its grid (against enumerating every state path), calibrated
against simulated orders, between a count score and the truth; written beside the truth."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pytest
import scipy.stats
from test_generate import files_of

from propensity import storage
from propensity.events import behaviour as bm
from propensity.events.generate import World, arrival_prior, generate_stream
from propensity.events.oracle import ObservableOracle, Observed, prior_grid
from propensity.events.truth import auc

START = dt.date(2026, 3, 7)  # a Saturday: the short chains below cross a Sunday
N_TYPES = len(bm.SESSION_TYPES)
T = {name: i for i, name in enumerate(bm.SESSION_TYPES)}


def day_of(sessions=0, ordered=False, **types):
    counts = np.zeros(N_TYPES, np.int64)
    for name, k in types.items():
        counts[T[name]] = k
    return sessions, counts, ordered


QUIET = day_of()
# Five days of six profiles, written to reach every case of the likelihood: quiet days between
# sessions, an order (its session forced), a first session after day 0 (present and quiet, or an
# arrival that day), with one session (where the forced arrival changes the likelihood) or more,
# an order on the first day seen, `return` (cooldown only), `checkout` (never when dormant).
PROFILES = [
    [day_of(2, view=3, search=1, add_to_cart=1), QUIET, day_of(1, True, view=2),
     day_of(3, view=4, **{"return": 1}, page_ping=1), QUIET],
    [QUIET, QUIET, day_of(1, view=2), QUIET, day_of(2, view=3, wishlist=2)],
    [QUIET, day_of(1, True, view=1), day_of(1, add_to_cart=2, checkout=1), QUIET, QUIET],
    [QUIET, QUIET, QUIET, QUIET, day_of(2, view=5, remove_from_cart=1)],
    [QUIET, QUIET, QUIET, QUIET, QUIET],
    [day_of(1, checkout=1, view=1), day_of(4, view=9, add_to_cart=3), day_of(2, True, view=2),
     day_of(1, view=1), day_of(5, view=12, search=3, **{"return": 2})],
]  # fmt: skip


def brute_force(obs, grid, arrival, weekdays, horizons, session_events):
    """P(node, state on D+1 | days 0..D) and P(order in D+1..D+H), by summing over every arrival
    day and every latent path (full pmfs, constants included), for a profile seen by day D of a
    stream with `session_events` times the planted mean events per session."""
    a, b, prior = grid.activity, grid.affinity, grid.weight
    last = len(obs) - 1
    joint = np.zeros((len(prior), 5))  # P(node, state on D, observations)
    for start in range(last + 1):
        if any(obs[d][0] > 0 for d in range(start)):
            continue  # before its arrival a profile shows nothing
        init = bm.INITIAL_PRESENT if start == 0 else bm.INITIAL_NEW
        for path in itertools.product(range(5), repeat=last + 1 - start):
            lik = arrival[start] * prior * init[path[0]]
            for t, s in enumerate(path):
                d = start + t
                n, types, ordered = obs[d]
                forced = ordered or (d == start and start > 0)
                lik = lik * emission(
                    n, types, ordered, forced, s, a, b, weekdays[d], session_events
                )
                if t + 1 < len(path):
                    lik = lik * (bm.AFTER_ORDER if ordered else bm.STAY)[s, path[t + 1]]
            joint[:, path[-1]] += lik
    joint /= joint.sum()
    move = bm.AFTER_ORDER if obs[-1][2] else bm.STAY
    tomorrow = joint @ move
    p = []
    for h in horizons:
        none = np.zeros(len(prior))
        for path in itertools.product(range(5), repeat=h):
            stay = tomorrow[:, path[0]].copy()
            for k, s in enumerate(path):
                wd = (weekdays[last] + 1 + k) % 7
                stay *= np.exp(-b * bm.ORDER_RATE[s] * bm.WEEKDAY[wd])
                if k + 1 < h:
                    stay *= bm.STAY[s, path[k + 1]]
            none += stay
        p.append(1.0 - none.sum())
    return tomorrow, np.array(p)


def emission(n, types, ordered, forced, s, a, b, weekday, session_events):
    """P(a day's counts | state s) on every node: order clock, censored Poisson sessions,
    negative-binomial events over the sessions (each geometric with mean session_events x the
    planted mean), multinomial types."""
    w = bm.WEEKDAY[weekday]
    q = 1.0 - np.exp(-b * bm.ORDER_RATE[s] * w)
    lam = a * bm.SESSION_RATE[s] * w
    pois = np.exp(-lam) * lam**n / math.factorial(n)
    if forced:
        pois = pois * (n >= 1) + (np.exp(-lam) if n == 1 else 0.0)
    e = int(types.sum())
    if n == 0:
        events = 1.0 if e == 0 else 0.0
    else:
        g = 1.0 / (session_events * bm.EVENTS_PER_SESSION[s])
        events = math.comb(e - 1, n - 1) * g**n * (1 - g) ** (e - n) if e >= n else 0.0
    mult = math.factorial(e) / math.prod(math.factorial(int(c)) for c in types)
    mult *= math.prod(bm.MIX[s, k] ** int(c) for k, c in enumerate(types))
    return (q if ordered else 1.0 - q) * pois * events * mult


def run_oracle(oracle, days_obs, weekdays):
    """Feed whole days to an oracle; yields (day, profiles seen, tomorrow, predictions)."""
    n = len(days_obs[0])
    seen = np.zeros(n, bool)
    for d, today in enumerate(days_obs):
        oracle.begin_day(d, weekdays[d])
        sessions = np.array([o[0] for o in today])
        observed = Observed(
            sessions, np.stack([o[1] for o in today]), np.array([o[2] for o in today])
        )
        # Two chunks, as the generator calls it.
        oracle.observe(0, n // 2, sub(observed, 0, n // 2))
        oracle.observe(n // 2, n, sub(observed, n // 2, n))
        seen |= sessions > 0
        which = np.flatnonzero(seen)
        yield d, which, oracle.tomorrow(0, which), oracle.predict(0, which)


def sub(o: Observed, lo: int, hi: int) -> Observed:
    return Observed(o.sessions[lo:hi], o.types[lo:hi], o.ordered[lo:hi])


def check_against_brute_force(profiles, weekdays, run_days, session_events):
    grid = prior_grid(3, 2)
    arrival = arrival_prior(run_days)
    horizons = [1, 3]
    oracle = ObservableOracle(
        len(profiles), arrival, horizons, grid, dtype=np.float64, session_events=session_events
    )
    days_obs = [[p[d] for p in profiles] for d in range(len(profiles[0]))]
    checked = 0
    for d, which, tomorrow, p in run_oracle(oracle, days_obs, weekdays):
        for row, i in enumerate(which):
            want_tomorrow, want_p = brute_force(
                profiles[i][: d + 1], grid, arrival, weekdays, horizons, session_events
            )
            np.testing.assert_allclose(tomorrow[row].T, want_tomorrow, rtol=0, atol=1e-9)
            np.testing.assert_allclose(p[row], want_p, rtol=1e-9, atol=1e-12)
            checked += 1
    return checked


# The planted stream, a sparser one (every state's mean still above one event) and the dense
# stream of `--session-events 8`.
SESSION_EVENTS = [1.0, 0.5, 8.0]


@pytest.mark.parametrize("session_events", SESSION_EVENTS)
def test_filter_matches_enumerating_every_path(session_events):
    weekdays = [(START.weekday() + d) % 7 for d in range(5)]
    checked = check_against_brute_force(PROFILES, weekdays, 6, session_events)
    assert checked == 2 + 3 + 4 + 4 + 5  # profiles seen by day 0, 1, 2, 3, 4


@pytest.mark.parametrize("session_events", SESSION_EVENTS)
def test_filter_matches_enumerating_every_path_on_simulated_days(session_events):
    """The counts the generator collects, for a handful of its profiles."""
    days, n = 4, 12
    world = World(2, n, days, session_events=session_events)
    profiles = [[] for _ in range(n)]
    weekdays = []
    for d in range(days):
        day = START + dt.timedelta(days=d)
        weekdays.append(day.weekday())
        rng = np.random.default_rng([2, d, 0])
        ev, state, ordered = world.simulate(rng, d, day, 0, n, world.catalogue.popularity(d), 0)
        o = world.observed
        assert (np.bincount(ev.profile, minlength=n) == o.types.sum(axis=1) + 3 * ordered).all()
        for i in range(n):
            profiles[i].append((int(o.sessions[i]), o.types[i].copy(), bool(o.ordered[i])))
        world.advance(rng, 0, n, state, ordered)
    assert check_against_brute_force(profiles, weekdays, days, session_events) > 10


def test_the_factor_moves_the_filter():
    """The days above tell the factors apart, so the brute-force cases check that the filter
    uses the factor: the same days read at 1 and at 8 give other predictions."""
    days_obs = [[p[d] for p in PROFILES] for d in range(len(PROFILES[0]))]
    weekdays = [(START.weekday() + d) % 7 for d in range(5)]
    last = {}
    for factor in (1.0, 8.0):
        oracle = ObservableOracle(
            len(PROFILES), arrival_prior(6), [3], prior_grid(3, 2), np.float64,
            session_events=factor,
        )  # fmt: skip
        *_, (_, which, _, p) = run_oracle(oracle, days_obs, weekdays)
        last[factor] = p[:, 0]
    assert len(which) == 5
    # Far beyond the brute force's tolerance (1e-9); small, as a few days of sessions say
    # little about the state either way.
    assert np.abs(last[1.0] - last[8.0]).max() > 1e-3


def simulate(profiles: int, days: int, seed: int, horizon: int):
    """World and oracle side by side (no files): per day, the seen profiles, the truth, the
    oracle's prediction, a count score, and whether each ordered within the horizon."""
    world = World(seed, profiles, days)
    oracle = ObservableOracle(profiles, arrival_prior(days), [horizon])
    orders = np.zeros((days, profiles), bool)
    sessions = np.zeros((days, profiles))
    out = []
    for d in range(days):
        day = START + dt.timedelta(days=d)
        rng = np.random.default_rng([seed, d, 0])
        oracle.begin_day(d, day.weekday())
        _, state, ordered = world.simulate(
            rng, d, day, 0, profiles, world.catalogue.popularity(d), 0
        )
        oracle.observe(0, profiles, world.observed)
        seen = np.flatnonzero(world.has_event)
        truth = bm.order_probability(
            state[seen], ordered[seen], world.affinity[seen], (day.weekday() + 1) % 7, horizon
        )
        sessions[d] = world.observed.sessions
        # A count score: sessions in the last 7 days, orders weighing most.
        count = sessions[max(0, d - 6) : d + 1, seen].sum(axis=0) + 10 * orders[
            max(0, d - 6) : d, seen
        ].any(axis=0)
        out.append((d, seen, truth, oracle.predict(0, seen)[:, 0], count))
        orders[d] = ordered
        world.advance(rng, 0, profiles, state, ordered)
    rows = []
    for d, seen, truth, p, count in out:
        if d + horizon < days:
            label = orders[d + 1 : d + 1 + horizon, seen].any(axis=0)
            rows.append((d, truth, p, count, label))
    return rows


def test_observable_oracle_is_calibrated_and_between_counts_and_truth():
    horizon = 3
    rows = simulate(30_000, 16, seed=4, horizon=horizon)
    # Given the histories, profiles order independently with the oracle's probabilities, and
    # residuals of days `horizon` apart are uncorrelated (a martingale): so the sum of the
    # residuals has variance sum p(1-p), overall and within bins of p. (Measured: |z| < 1.2
    # here; 4.3 in the lowest bin when the oracle forgets that a first session may be an
    # arrival's.)
    spaced = [r for r in rows if r[0] % horizon == 0]
    p = np.concatenate([r[2] for r in spaced])
    label = np.concatenate([r[4] for r in spaced])
    assert len(p) > 50_000 and 0.02 < label.mean() < 0.2
    z = (label.sum() - p.sum()) / np.sqrt((p * (1 - p)).sum())
    assert abs(z) < 4, z
    edges = np.quantile(p, [0, 0.5, 0.8, 0.95, 1.0])
    for lo, hi in itertools.pairwise(edges):
        b = (p >= lo) & (p <= hi)
        z = (label[b].sum() - p[b].sum()) / np.sqrt((p[b] * (1 - p[b])).sum())
        assert abs(z) < 4, (lo, hi, z)
    # Per day: the truth ranks best, the oracle next, a count score last.
    aucs = np.array([[auc(s, r[4]) for s in (r[1], r[2], r[3])] for r in rows])
    truth, observable, count = aucs.mean(axis=0)
    assert observable <= truth + 0.01
    assert observable > count + 0.03  # measured: count 0.57, oracle 0.68, truth 0.83
    assert truth - observable > 0.05  # the latent state is worth something


def test_truth_gets_the_observable_columns_and_the_events_stay_the_same(tmp_path):
    runs = {}
    for name, observable in (("a", True), ("b", True), ("off", False)):
        out = str(tmp_path / name)
        generate_stream(
            out, START, 9, 500, seed=3, bad_share=0.02, observable=observable,
            horizons={"p_order_7d": 7, "p_order_2d": 2},
        )  # fmt: skip
        runs[name] = out
    files = {name: files_of(out) for name, out in runs.items()}
    assert files["a"] == files["b"]  # deterministic, truth included
    events = {
        name: {k: v for k, v in f.items() if not k.startswith("_truth")}
        for name, f in files.items()
    }
    assert events["a"] == events["off"]  # the oracle draws nothing
    assert len(events["a"]) == 2 * 9  # a part and a marker a day

    meta = storage.read_json(storage.join(runs["a"], "_truth", "generator.json"))
    assert meta["observable_oracle"]["columns"] == {
        "p_order_7d_observable": 7,
        "p_order_2d_observable": 2,
    }
    summary = meta["summary"]
    assert sorted(summary["observable_auc_7d"]) == sorted(summary["oracle_auc_7d"])
    assert len(summary["observable_auc_7d"]) == 2
    for d in range(9):
        part = storage.partition(storage.join(runs["a"], "_truth"), START + dt.timedelta(days=d))
        truth = storage.read_parquet(part)
        plain = storage.read_parquet(
            storage.partition(storage.join(runs["off"], "_truth"), START + dt.timedelta(days=d))
        )
        assert truth.column_names == [
            "profile_id", "p_order_7d", "p_order_2d", "p_order_7d_observable", "p_order_2d_observable"
        ]  # fmt: skip
        assert plain.column_names == ["profile_id", "p_order_7d", "p_order_2d"]
        assert truth.select(plain.column_names).equals(plain)  # same rows, same truth
        for h in ("7d", "2d"):
            p = truth.column(f"p_order_{h}_observable").to_numpy()
            assert ((p >= 0) & (p <= 1)).all() and np.isfinite(p).all()
        p2, p7 = (
            truth.column("p_order_2d_observable").to_numpy(),
            truth.column("p_order_7d_observable").to_numpy(),
        )
        assert (p2 <= p7 + 1e-12).all()


@pytest.mark.parametrize("days", [1, 2, 9])
def test_arrival_prior_is_how_the_world_draws_arrivals(days):
    world = World(0, 40_000, days)
    share = np.bincount(world.arrival, minlength=days) / 40_000
    want = arrival_prior(days)
    assert want.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(share, want, atol=0.01)


def test_item_predictions_integrate_the_match_posterior():
    """Against quadrature: P(tomorrow's state, node) (checked above against brute force) times
    the recursion at each match share m, integrated over a Beta posterior of m."""
    days, n = 6, 2000
    world = World(3, n, days)
    oracle = ObservableOracle(n, arrival_prior(days), [7], matching=[3, 5], dtype=np.float64)
    for d in range(days):
        day = START + dt.timedelta(days=d)
        rng = np.random.default_rng([3, d, 0])
        oracle.begin_day(d, day.weekday())
        _, state, ordered = world.simulate(rng, d, day, 0, n, world.catalogue.popularity(d), 0)
        oracle.observe(0, n, world.observed)
        world.advance(rng, 0, n, state, ordered)
    which = np.flatnonzero(world.has_event)[:40]
    rng = np.random.default_rng(0)
    # Whole a and b: the Beta density is a polynomial, so Gauss-Legendre integrates exactly.
    a, b = rng.integers(1, 5, len(which)), rng.integers(1, 9, len(which))
    x = scipy.stats.beta(b, a)  # 1 - m ~ Beta(b, a)
    moments = [np.column_stack([x.moment(j) for j in range(h + 1)]) for h in (3, 5)]
    p = oracle.predict(0, which, moments)
    tomorrow = oracle.tomorrow(0, which)  # (profiles, state, node)
    nodes, weights = np.polynomial.legendre.leggauss(16)
    m = (nodes + 1) / 2
    density = scipy.stats.beta(a[:, None], b[:, None]).pdf(m[None, :]) * weights / 2  # (p, q)
    affinity = oracle.grid.affinity
    first_weekday = (START + dt.timedelta(days=days)).weekday()
    for col, h in ((1, 3), (2, 5)):
        aff = np.repeat(affinity, len(m))
        match = np.repeat(np.tile(m, len(affinity))[:, None], h, axis=1)
        u = bm.no_match_survival(aff, first_weekday, h, match).reshape(len(affinity), len(m), 5)
        survive = np.einsum("psg,gqs,pq->p", tomorrow, u, density)
        np.testing.assert_allclose(p[:, col], 1 - survive, rtol=1e-9, atol=1e-12)
    assert (p[:, 1] < p[:, 2]).all() and (p[:, 2] < p[:, 0]).all()
