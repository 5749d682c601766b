"""`propensity generate`: a synthetic tracking stream with a known truth, one partition a day.

Flow of a run: build the profiles and the article catalogue; then for each day and each chunk of
profiles, step the planted behaviour model (`behaviour`), simulate that day's sessions and events,
render them (`render`) with the delivery anomalies of a real stream (late events, duplicates,
unknown types) and the requested share of malformed records (`malformed`), write one part file
per chunk, then the day's `_SUCCESS`; then the day's ground truth under `_truth/`: the planted
model's probabilities, and beside them those of the observable oracle (`oracle`), the best a
profile's history can support.

Faults (`Fault`, `--fault KIND@YYYY-MM-DD`) plant a known problem from a chosen day on, so that
the monitor can be tested against known truth: a tracking outage (one event type stops being
recorded), a schema/tracking bug (prices in cents; a field renamed, so it arrives as null), or a
behaviour shift (the order rate changes). Nothing before a fault's day changes: tracking faults
touch only the rendering of that day's records, the behaviour shift only that day's order clock.

Each profile also leans towards a few categories and brands (`World.browse`), and orders from
what it browsed, so for a target on items (an order in chosen categories, of chosen brands, ...)
the truth is exact too (`truth`, `targets`): an ordered article is one draw from the profile's
browsing, matching with a probability known from its preferences.

Only the per-profile state (a few bytes per profile, plus the oracle's posterior) lives across
days; events exist one chunk at a time. Every random draw comes from a generator seeded by
(seed, day, chunk), so a run is byte-for-byte reproducible; the oracle draws nothing.
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import logging
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity import __version__, storage
from propensity.config import EventFields, TargetConfig
from propensity.events import behaviour as bm
from propensity.events import malformed
from propensity.events.catalogue import CATEGORIES, Catalogue, Popularity
from propensity.events.oracle import ObservableOracle, Observed
from propensity.events.render import CODE, TS_FORMAT_SHARE, WITH_ARTICLE, Events, Renderer
from propensity.events.targets import TruthTarget, truth_targets
from propensity.events.truth import Open, Truth, auc
from propensity.ui import kv, progress

log = logging.getLogger(__name__)

WRITERS = 2  # threads rendering, compressing and writing parts while the next chunk is simulated
CHUNK_PROFILES = 50_000  # profiles simulated together; fixed, because the seeds depend on it
PRESENT_SHARE = 0.5  # share of profiles present from the first day; the rest arrive uniformly
GAP_MEAN_MS = 50_000  # mean time between two events of a session
REUSE_ARTICLE = 0.45  # chance an event in a session is about the previous event's article
LATE_SHARE = 0.004  # events delivered 1-3 days after their day
LATE_DELAY_SHARE = np.array([0.7, 0.2, 0.1])  # of 1, 2, 3 days
DUPLICATE_SHARE = 0.003  # events delivered twice (same event_id)
DUPLICATE_NEXT_DAY = 0.4  # of duplicates, the share redelivered the next day
FUNNEL = ("add_to_cart", "checkout", "order")  # the events an order appends to a session
GZIP_LEVEL = 1  # fast: the stream is written once and read a few times
TRUTH = "_truth"
FORMATS = ("jsonl", "parquet")
DAY_MS = 86_400_000
PREFERENCE_STREAM = 16  # second seed word of the preferences' generator


# Fault kinds and their default argument: the event type that stops, the factor of prices,
# the field renamed, the factor of the order rate.
FAULT_KINDS = {"outage": "add_to_cart", "cents": "100", "rename": "price", "order_rate": "0.25"}
RENAMED_SUFFIX = "_v2"  # what a renamed field is called in the records


@dataclass(frozen=True)
class Fault:
    """A problem planted from `day` on: `kind` (a key of FAULT_KINDS) with its argument."""

    kind: str
    day: dt.date
    arg: str

    @staticmethod
    def parse(text: str) -> Fault:
        """`KIND[:ARG]@YYYY-MM-DD`, e.g. `outage:order@2026-01-20`, `cents@2026-01-20`."""
        head, sep, day = text.partition("@")
        kind, _, arg = head.partition(":")
        if not sep or kind not in FAULT_KINDS:
            raise ValueError(
                f"--fault must be KIND[:ARG]@YYYY-MM-DD with KIND one of "
                f"{', '.join(FAULT_KINDS)}, not {text!r}"
            )
        try:
            when = dt.date.fromisoformat(day)
        except ValueError:
            raise ValueError(f"--fault {text!r}: {day!r} is not a date YYYY-MM-DD") from None
        fault = Fault(kind, when, arg or FAULT_KINDS[kind])
        fault.check()
        return fault

    def check(self) -> None:
        if self.kind == "outage" and self.arg not in CODE:
            raise ValueError(f"--fault outage: unknown event type {self.arg!r}")
        if self.kind == "rename" and self.arg not in ("article_id", "brand", "category", "price"):
            raise ValueError(
                f"--fault rename: {self.arg!r} is not an optional field "
                "(article_id, brand, category, price)"
            )
        if self.kind in ("cents", "order_rate"):
            try:
                if float(self.arg) <= 0:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"--fault {self.kind}: {self.arg!r} is not a positive factor"
                ) from None

    def describe(self) -> dict:
        return {"kind": self.kind, "day": self.day.isoformat(), "arg": self.arg}


def active(faults: list[Fault], kind: str, day: dt.date) -> list[Fault]:
    """The faults of `kind` in force on `day`."""
    return [f for f in faults if f.kind == kind and f.day <= day]


def order_factor(faults: list[Fault], day: dt.date) -> float:
    """The factor on every profile's order rate on `day` (1 without a behaviour shift)."""
    return float(np.prod([float(f.arg) for f in active(faults, "order_rate", day)]))


def day_renderer(
    base: Renderer,
    world: World,
    fields: EventFields,
    faults: list[Fault],
    day: dt.date,
    cache: dict,
) -> Renderer:
    """The renderer of `day`: `base`, or one with the day's tracking faults (cents, renames)."""
    key = tuple(f for f in faults if f.kind in ("cents", "rename") and f.day <= day)
    if not key:
        return base
    if key not in cache:
        catalogue = copy.copy(world.catalogue)
        for f in key:
            if f.kind == "cents":
                catalogue.price = np.round(catalogue.price * float(f.arg), 2)
        renames = {
            f.arg: getattr(fields, f.arg) + RENAMED_SUFFIX for f in key if f.kind == "rename"
        }
        cache[key] = Renderer(catalogue, world.profile_ids, fields.model_copy(update=renames))
    return cache[key]


def drop_outages(rows: Events, faults: list[Fault], day: dt.date) -> Events:
    """The records tracking still delivers on `day`: none of a type whose tracking stopped."""
    stopped = [CODE[f.arg] for f in active(faults, "outage", day)]
    return rows.take(np.flatnonzero(~np.isin(rows.etype, stopped))) if stopped else rows


@dataclass
class Summary:
    """What a run wrote, per day and in total (also saved in `_truth/generator.json`)."""

    days: list[str] = field(default_factory=list)
    records: list[int] = field(default_factory=list)  # valid records written per day
    bad: list[int] = field(default_factory=list)  # malformed records written per day
    bad_kinds: dict[str, int] = field(default_factory=dict)
    late: int = 0  # records delivered on a later day than their timestamp's day
    duplicates: int = 0  # redelivered copies (same event_id)
    truth_rows: list[int] = field(default_factory=list)
    # Days with 7 simulated days ahead: realised share of truth profiles ordering within 7 days,
    # the AUC of the truth against those orders (knowing the latent state: unreachable), and
    # that of the observable oracle (the best a model of the histories can expect).
    order_share_7d: dict[str, float] = field(default_factory=dict)
    oracle_auc_7d: dict[str, float] = field(default_factory=dict)
    observable_auc_7d: dict[str, float] = field(default_factory=dict)
    # The same per truth column (its own horizon and items), by the column's name.
    targets: dict[str, TargetScores] = field(default_factory=dict)

    @property
    def total_records(self) -> int:
        return sum(self.records)

    def record(self, day: dt.date, o: Open, label: np.ndarray) -> None:
        """A day's predictions of one column against the labels realised over its horizon."""
        key = day.isoformat()
        share = round(float(label.mean()), 5) if len(label) else 0.0
        truth_auc = round(auc(o.truth, label), 5)
        observable_auc = round(auc(o.observable, label), 5) if o.observable is not None else None
        if o.column is None:
            self.order_share_7d[key] = share
            self.oracle_auc_7d[key] = truth_auc
            if observable_auc is not None:
                self.observable_auc_7d[key] = observable_auc
            return
        scores = self.targets[o.column]
        scores.share[key] = share
        scores.truth_auc[key] = truth_auc
        if observable_auc is not None:
            scores.observable_auc[key] = observable_auc


@dataclass
class TargetScores:
    """Per day with the column's horizon simulated after it: the realised share of truth
    profiles with a (matching) order, the AUC of the truth and of the observable oracle."""

    horizon_days: int
    share: dict[str, float] = field(default_factory=dict)
    truth_auc: dict[str, float] = field(default_factory=dict)
    observable_auc: dict[str, float] = field(default_factory=dict)


def part_name(chunk: int, fmt: str) -> str:
    return f"part-{chunk:05d}." + ("jsonl.gz" if fmt == "jsonl" else "parquet")


def generate_stream(
    out: str,
    start: dt.date | str,
    days: int,
    profiles: int,
    *,
    seed: int = 0,
    fmt: str = "jsonl",
    bad_share: float = 0.0,
    fields: EventFields | None = None,
    horizons: dict[str, int] | None = None,
    targets: list[TargetConfig] | None = None,
    observable: bool = True,
    faults: list[Fault] | None = None,
    session_events: float = 1.0,
) -> Summary:
    """Write `days` daily partitions of events under `out`, and the truth under `out/_truth`.

    The truth columns: `targets` (the config's; one `p_<name>` per order target, on its items
    where it names any, see `targets.truth_targets`), or `horizons`, truth column names to
    any-order horizons in days (default `{"p_order_7d": 7}`); not both. With `observable`, each
    gets a column `<name>_observable` from the observable oracle (the events are the same bytes
    either way). `faults` plant problems from their day on (the stream before the earliest
    fault's day is unchanged). `session_events` multiplies the mean events per session (1: the
    planted stream, byte for byte; 8: a dense stream, like grocery baskets or heavy browsing),
    for the observable oracle too. Raises ValueError on bad arguments (the message names the
    option).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if days < 1 or profiles < 1:
        raise ValueError("--days and --profiles must be at least 1")
    if not 0.0 <= bad_share < 0.5:
        raise ValueError(f"--bad-share must be in [0, 0.5), not {bad_share}")
    if horizons is not None and targets is not None:
        raise ValueError("generate_stream: give targets or horizons, not both")
    start = storage.as_date(start)
    faults = list(faults or [])
    for f in faults:
        f.check()
    fields = fields or EventFields()
    renderers: dict = {}
    if targets is not None:
        wanted = truth_targets(targets)
    else:
        wanted = [TruthTarget(k, h) for k, h in (horizons or {"p_order_7d": 7}).items()]
    world = World(seed, profiles, days, max([7, *(t.horizon_days for t in wanted)]), session_events)
    ahead, matching = Truth.horizons(wanted)
    oracle = (
        ObservableOracle(
            profiles, arrival_prior(days), ahead, matching=matching, session_events=session_events
        )
        if observable
        else None
    )
    truth = Truth(world, wanted, oracle)
    renderer = Renderer(world.catalogue, world.profile_ids, fields)
    storage.delete(storage.join(out, TRUTH, "generator.json"))  # written again only on success

    n_chunks = -(-profiles // CHUNK_PROFILES)
    summary = Summary(targets={t.column: TargetScores(t.horizon_days) for t in wanted})
    pending: dict[tuple[int, int], list[tuple[bool, Events]]] = defaultdict(list)
    writes = Writes()
    with progress() as bar, ThreadPoolExecutor(max_workers=WRITERS) as writer:
        task = bar.add_task("generate", total=days * n_chunks)
        for d in range(days):
            day = start + dt.timedelta(days=d)
            bar.update(task, description=f"generate {day}")
            part_uri = storage.partition(out, day)
            storage.delete(part_uri)  # idempotent: a re-run replaces the day whole
            pop = world.catalogue.popularity(d)
            records = bad = 0
            truth.begin_day(d, day.weekday())
            today = day_renderer(renderer, world, fields, faults, day, renderers)
            world.order_factor = order_factor(faults, day)
            for c in range(n_chunks):
                rng = np.random.default_rng([seed, d, c])
                lo, hi = c * CHUNK_PROFILES, min(profiles, (c + 1) * CHUNK_PROFILES)
                ev, state, ordered = world.simulate(rng, d, day, lo, hi, pop, c)
                rows = drop_outages(deliver(rng, ev, d, c, pending, summary), faults, day)
                # Malformed records draw from their own generator, so the valid stream is the
                # same whatever --bad-share is.
                part_rng = np.random.default_rng([seed, d, c, 1])
                kinds: list[str] = []
                if bad_share > 0 and len(rows):
                    n_bad = int(part_rng.binomial(len(rows), bad_share / (1 - bad_share)))
                    kinds = malformed.assign_kinds(part_rng, n_bad, malformed.kinds_for(fmt))
                # Render, compress and upload on a second thread while the next chunk is
                # simulated (part_rng is used there only after the draws above: deterministic).
                uri = storage.join(part_uri, part_name(c, fmt))
                writes.settle(limit=WRITERS - 1)  # bounded memory: few parts in flight
                writes.add(
                    part_uri,
                    writer.submit(write_part, uri, part_rng, today, rows, kinds, fmt, day),
                )
                records += len(rows)
                bad += len(kinds)
                for k in kinds:
                    summary.bad_kinds[k] = summary.bad_kinds.get(k, 0) + 1

                # Truth at the end of the day, for every profile seen so far (by event time).
                # Truth under a behaviour shift assumes the shift of today lasts the horizon.
                seen = np.flatnonzero(world.has_event[lo:hi])
                truth.observe(lo, hi, world.observed)
                truth.chunk(
                    lo,
                    seen,
                    state[seen],
                    ordered[seen],
                    world.affinity[seen + lo] * world.order_factor,
                    (day.weekday() + 1) % 7,
                )
                world.advance(rng, lo, hi, state, ordered)
                bar.advance(task)
            writes.close_day(part_uri)

            idx, columns = truth.end_day()
            write_truth(out, day, world.profile_ids.take(pa.array(idx)), columns)
            for o, label in truth.matured(d):
                summary.record(start + dt.timedelta(days=o.day), o, label)
            summary.days.append(day.isoformat())
            summary.records.append(records)
            summary.bad.append(bad)
            summary.truth_rows.append(len(idx))
            log.info(kv(day=day, records=records, bad=bad, truth_rows=len(idx)))
        writes.settle(limit=0)

    storage.write_json(
        storage.join(out, TRUTH, "generator.json"),
        {
            "generator": "propensity generate",
            "version": __version__,
            "seed": seed,
            "start": start.isoformat(),
            "days": days,
            "profiles": profiles,
            "format": fmt,
            "bad_share": bad_share,
            "session_events": float(session_events),
            "faults": [f.describe() for f in faults],
            "field_names": renderer.names,
            "truth_columns": {t.column: t.horizon_days for t in wanted},
            "truth_targets": truth.describe(),
            "observable_oracle": (
                {
                    "columns": {f"{t.column}_observable": t.horizon_days for t in wanted},
                    **oracle.describe(),
                }
                if oracle
                else None
            ),
            "behaviour": world.describe(),
            "anomalies": {
                "late_share": LATE_SHARE,
                "late_delay_days_share": LATE_DELAY_SHARE.tolist(),
                "duplicate_share": DUPLICATE_SHARE,
                "duplicate_next_day_share": DUPLICATE_NEXT_DAY,
                "unknown_types": ["page_ping"],
                "malformed_kinds": list(malformed.kinds_for(fmt)) if bad_share > 0 else [],
            },
            "summary": asdict(summary),
        },
    )
    return summary


class Writes:
    """Part files being written on other threads, by day; a day's `_SUCCESS` follows its parts."""

    def __init__(self):
        self.days: list[tuple[str, list[Future], bool]] = []  # (partition, parts, all submitted)

    def add(self, partition: str, part: Future) -> None:
        if not self.days or self.days[-1][0] != partition:
            self.days.append((partition, [], False))
        self.days[-1][1].append(part)

    def close_day(self, partition: str) -> None:
        """No more parts for this partition: mark it once they are written."""
        if not self.days or self.days[-1][0] != partition:
            self.days.append((partition, [], True))
        else:
            self.days[-1] = (partition, self.days[-1][1], True)
        self.settle(limit=WRITERS)

    def settle(self, limit: int) -> None:
        """Wait until at most `limit` parts are in flight; mark every finished day, oldest first.
        A failed write raises here, and its day never gets a marker."""
        while True:
            while self.days and self.days[0][2] and all(f.done() for f in self.days[0][1]):
                partition, parts, _ = self.days.pop(0)
                for f in parts:
                    f.result()
                storage.mark_complete(partition)
            running = [f for _, parts, _ in self.days for f in parts if not f.done()]
            if len(running) <= limit:
                return
            running[0].result()


class World:
    """The profiles (fixed traits and today's latent state) and the catalogue of one run."""

    def __init__(
        self, seed: int, profiles: int, days: int, horizon: int = 7, session_events: float = 1.0
    ):
        """`horizon`: the longest truth horizon, so that realised orders are kept that long;
        `session_events`: the factor on the mean events per session (`bm.events_per_session`)."""
        self.events_per_session = bm.events_per_session(session_events)  # by state
        rng = np.random.default_rng([seed])
        s = bm.ACTIVITY_SIGMA
        self.activity = rng.lognormal(-s * s / 2, s, profiles)  # mean 1, heavy tail
        a = bm.AFFINITY_SIGMA
        self.affinity = self.activity**0.3 * rng.lognormal(-a * a / 2, a, profiles)
        later = rng.integers(1, max(days, 2), profiles)
        self.arrival = np.where(rng.random(profiles) < PRESENT_SHARE, 0, later).astype(np.int32)
        if days == 1:
            self.arrival[:] = 0  # as `arrival_prior` says
        self.state = np.full(profiles, -1, np.int8)  # -1: not arrived yet
        self.has_event = np.zeros(profiles, bool)
        self.observed: Observed | None = None  # what histories show of the last simulated chunk
        self.order_factor = 1.0  # on every order rate today (a planted behaviour shift)
        # Ring of the last days' ordered article per profile (-1: no order), for the summary.
        self.order_article = np.full((max(8, horizon + 1), profiles), -1, np.int32)
        self.catalogue = Catalogue(rng, profiles, days)
        # Preferences come from their own generator: the traits above are those of before.
        pref = np.random.default_rng([seed, PREFERENCE_STREAM])
        alpha = bm.PREFERENCE_CONCENTRATION * self.catalogue.category_share
        self.preference = pref.dirichlet(alpha, profiles).astype(np.float32)  # over categories
        self.favourites = pref.choice(
            self.catalogue.n_brands, (profiles, bm.FAVOURITE_BRANDS), p=self.catalogue.brand_share
        ).astype(np.int32)
        self.item_masks: list[np.ndarray] = []  # per item target: articles it matches
        width = max(7, len(str(profiles - 1)))
        digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(profiles)), pa.string()), width, "0")
        self.profile_ids = pc.binary_join_element_wise("p", digits, "")

    def simulate(self, rng, d: int, day: dt.date, lo: int, hi: int, pop: Popularity, chunk: int):
        """Day d of profiles lo..hi (`pop`: the day's popularity): their events, their state
        today, and whether they ordered. What a history shows of each of them that day is left
        in `self.observed` (for the observable oracle; counting draws nothing)."""
        n = hi - lo
        state = self.state[lo:hi].copy()
        arriving = self.arrival[lo:hi] == d
        state[arriving] = categorical(
            rng, np.tile(bm.INITIAL_PRESENT if d == 0 else bm.INITIAL_NEW, (arriving.sum(), 1))
        )
        present = state >= 0
        s = np.where(present, state, 0)
        weekday = day.weekday()
        q = 1.0 - np.exp(
            -self.affinity[lo:hi] * self.order_factor * bm.ORDER_RATE[s] * bm.WEEKDAY[weekday]
        )
        ordered = present & (rng.random(n) < q)
        rate = self.activity[lo:hi] * bm.SESSION_RATE[s] * bm.WEEKDAY[weekday]
        sessions = np.where(present, rng.poisson(rate), 0)
        # An order needs a session; a profile arriving later shows up with one.
        sessions = np.maximum(sessions, (ordered | (arriving & (d > 0))).astype(sessions.dtype))
        self.has_event[lo:hi] |= sessions > 0

        n_sessions = int(sessions.sum())
        sess_profile = np.repeat(np.arange(n), sessions)
        sess_state = s[sess_profile]
        base = rng.geometric(1.0 / self.events_per_session[sess_state])
        funnel = np.zeros(n_sessions, np.int64)
        first_session = np.cumsum(sessions) - sessions
        funnel[first_session[ordered]] = len(FUNNEL)  # the order closes the day's first session
        per_session = base + funnel
        n_events = int(per_session.sum())
        sess_first_event = np.cumsum(per_session) - per_session
        ev_sess = np.repeat(np.arange(n_sessions), per_session)
        pos = np.arange(n_events) - sess_first_event[ev_sess]
        in_funnel = pos >= base[ev_sess]

        mix = np.cumsum(bm.MIX, axis=1)[sess_state[ev_sess]]
        k = np.minimum((rng.random(n_events)[:, None] > mix).sum(axis=1), len(bm.SESSION_TYPES) - 1)
        etype = SESSION_CODES[k]
        etype[in_funnel] = FUNNEL_CODES[(pos - base[ev_sess])[in_funnel]]
        n_types = len(bm.SESSION_TYPES)
        drawn = sess_profile[ev_sess][~in_funnel] * n_types + k[~in_funnel]

        # Sessions: a start hour from the daily curve, events minutes apart, all within the day.
        gaps = rng.exponential(GAP_MEAN_MS, n_events).astype(np.int64)
        gaps[pos == 0] = 0
        offset = np.cumsum(gaps)
        offset -= offset[sess_first_event][ev_sess]
        duration = (
            offset[sess_first_event + per_session - 1] if n_sessions else np.zeros(0, np.int64)
        )
        squeeze_into_day(offset, duration, ev_sess)
        hour = rng.choice(24, size=n_sessions, p=bm.HOUR)
        begin = hour * 3_600_000 + rng.integers(0, 3_600_000, n_sessions)
        begin = np.clip(np.minimum(begin, DAY_MS - 1 - duration), 0, None)
        day_ms = (day - dt.date(1970, 1, 1)).days * DAY_MS
        ts = day_ms + begin[ev_sess] + offset

        # Articles from the profile's preferences; often the previous event's again. The order
        # funnel is about the session's last carted article, else its last one: a choice made
        # without looking at the articles, so the ordered article is distributed as one fresh
        # draw (what the truth of an item target assumes).
        fresh = self.browse(rng, pop, lo + sess_profile[ev_sess])
        new = (pos == 0) | ((rng.random(n_events) >= REUSE_ARTICLE) & ~in_funnel)
        source = np.maximum.accumulate(np.where(new, np.arange(n_events), 0))
        carted = (etype == CODE["add_to_cart"]) & ~in_funnel
        last_cart = np.maximum.accumulate(np.where(carted, np.arange(n_events), -1))
        from_cart = in_funnel & (last_cart >= sess_first_event[ev_sess])
        source[from_cart] = source[last_cart[from_cart]]
        article = fresh[source]
        order_at = np.flatnonzero(in_funnel & (etype == CODE["order"]))
        self.order_article[d % len(self.order_article), lo:hi] = -1
        self.order_article[d % len(self.order_article), lo + sess_profile[ev_sess[order_at]]] = (
            article[order_at]
        )
        draws, matching = self.seen_draws(
            n, sess_profile[ev_sess], ev_sess, etype, in_funnel, article
        )
        self.observed = Observed(
            sessions=sessions,
            types=np.bincount(drawn, minlength=n * n_types).reshape(n, n_types),
            ordered=ordered,
            draws=draws,
            matching=matching,
        )
        ts_format = rng.choice(len(TS_FORMAT_SHARE), size=n_events, p=TS_FORMAT_SHARE).astype(
            np.int8
        )
        id_base = ((day.year * 10_000 + day.month * 100 + day.day) * 1_000 + chunk) * 10**8
        events = Events(
            event_id=id_base + np.arange(n_events, dtype=np.int64),
            profile=(lo + sess_profile[ev_sess]).astype(np.int32),
            ts=ts.astype(np.int64),
            etype=etype.astype(np.int8),
            article=article,
            ts_format=ts_format,
        )
        return events, state, ordered

    def browse(self, rng, pop: Popularity, profile: np.ndarray) -> np.ndarray:
        """One fresh article per entry of `profile`: a category from its preference, then an
        article by popularity within it, favourite brands' articles weighing 1 + BRAND_BOOST
        times theirs (drawn in two steps: the favourites' share of the tilted mass, else the
        whole category by popularity; together exactly the tilted weights)."""
        n, nb = len(profile), self.catalogue.n_brands
        cum = np.cumsum(self.preference[profile], axis=1, dtype=np.float64)
        u = rng.random(n)[:, None] * cum[:, -1:]
        category = np.minimum((u >= cum).sum(axis=1), len(CATEGORIES) - 1)
        fav = self.favourites[profile]
        fav_mass = pop.cells[category[:, None], fav]  # (n, favourites)
        boost = bm.BRAND_BOOST * fav_mass.sum(axis=1)
        mass = pop.cells.sum(axis=1)[category]
        to_fav = rng.random(n) * (mass + boost) < boost
        first = category * nb
        last = first + nb
        f = np.flatnonzero(to_fav)
        fcum = np.cumsum(fav_mass[f], axis=1)
        k = np.minimum(
            (rng.random(len(f))[:, None] * fcum[:, -1:] >= fcum).sum(axis=1), fav.shape[1] - 1
        )
        first[f] += fav[f, k]
        last[f] = first[f] + 1
        return pop.sample_in_cells(rng, first, last)

    def match_share(self, pop: Popularity, matched: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """m[i]: probability that a fresh article of profile lo+i on `pop`'s day is one of the
        `matched` cell masses (`Popularity.cell_mass` of a target's mask), exactly as `browse`
        draws: sum over categories of preference x the matched share of the tilted mass."""
        fav = self.favourites[lo:hi]
        num = np.broadcast_to(matched.sum(axis=1), (hi - lo, len(CATEGORIES))).copy()
        den = np.broadcast_to(pop.cells.sum(axis=1), (hi - lo, len(CATEGORIES))).copy()
        for k in range(fav.shape[1]):
            num += bm.BRAND_BOOST * matched[:, fav[:, k]].T
            den += bm.BRAND_BOOST * pop.cells[:, fav[:, k]].T
        pref = self.preference[lo:hi].astype(np.float64)
        return np.einsum("ic,ic->i", pref, num / den) / pref.sum(axis=1)

    def seen_draws(
        self,
        n: int,
        profile: np.ndarray,
        session: np.ndarray,
        etype: np.ndarray,
        in_funnel: np.ndarray,
        article: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per profile: fresh articles a history shows (an article-carrying session event
        whose article differs from the session's previous one shown; the order funnel left out),
        and how many of them each item target matches, (n, item targets)."""
        shown = np.flatnonzero(WITH_ARTICLE[etype] & ~in_funnel)
        a, sess = article[shown], session[shown]
        new = np.ones(len(shown), bool)
        new[1:] = (sess[1:] != sess[:-1]) | (a[1:] != a[:-1])
        who, a = profile[shown[new]], a[new]
        draws = np.bincount(who, minlength=n)
        matching = np.zeros((n, len(self.item_masks)), np.int64)
        for k, mask in enumerate(self.item_masks):
            matching[:, k] = np.bincount(who[mask[a]], minlength=n)
        return draws, matching

    def advance(self, rng, lo: int, hi: int, state: np.ndarray, ordered: np.ndarray) -> None:
        """Step the chain of profiles lo..hi to tomorrow."""
        present = state >= 0
        nxt = state.copy()
        nxt[present] = categorical(rng, bm.next_state_probs(state[present], ordered[present]))
        self.state[lo:hi] = nxt

    def describe(self) -> dict:
        return {
            "states": list(bm.STATES),
            "transition_without_order": bm.STAY.tolist(),
            "transition_after_order": bm.AFTER_ORDER.tolist(),
            "order_rate_per_day": bm.ORDER_RATE.tolist(),
            "sessions_per_day": bm.SESSION_RATE.tolist(),
            "events_per_session": self.events_per_session.tolist(),
            "session_types": list(bm.SESSION_TYPES),
            "session_type_mix": bm.MIX.tolist(),
            "initial_state_present": bm.INITIAL_PRESENT.tolist(),
            "initial_state_new": bm.INITIAL_NEW.tolist(),
            "weekday_weight": bm.WEEKDAY.tolist(),
            "hour_share": bm.HOUR.round(5).tolist(),
            "activity_sigma": bm.ACTIVITY_SIGMA,
            "affinity_sigma": bm.AFFINITY_SIGMA,
            "present_share": PRESENT_SHARE,
            "preference_concentration": bm.PREFERENCE_CONCENTRATION,
            "category_share": self.catalogue.category_share.round(6).tolist(),
            "favourite_brands": bm.FAVOURITE_BRANDS,
            "brand_boost": bm.BRAND_BOOST,
            "reuse_article": REUSE_ARTICLE,
            "catalogue_initial": self.catalogue.initial,
            "catalogue_new_per_day": self.catalogue.per_day,
        }


def arrival_prior(days: int) -> np.ndarray:
    """P(a profile arrives on day d), d = 0..days-1, as `World` draws it: PRESENT_SHARE on day 0
    (present from the start), the rest uniform over the later days."""
    if days == 1:
        return np.ones(1)
    return np.array([PRESENT_SHARE] + [(1 - PRESENT_SHARE) / (days - 1)] * (days - 1))


def squeeze_into_day(offset: np.ndarray, duration: np.ndarray, ev_sess: np.ndarray) -> None:
    """Scale, in place, the event offsets of every session longer than a day (only the tail of
    a dense stream's sessions: `--session-events`) to span DAY_MS - 1, so that all its events stay
    on their day, in their order; `duration` (per session) follows. No truth reads the times."""
    too_long = duration > DAY_MS - 1
    if not too_long.any():  # nearly always (at factor 1, in practice always)
        return
    e = np.flatnonzero(too_long[ev_sess])
    offset[e] = offset[e] * (DAY_MS - 1) // duration[ev_sess[e]]
    duration[too_long] = DAY_MS - 1


SESSION_CODES = np.array([CODE[t] for t in bm.SESSION_TYPES], np.int8)
FUNNEL_CODES = np.array([CODE[t] for t in FUNNEL], np.int8)


def categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a probability matrix."""
    u = rng.random(len(probs))[:, None]
    return np.minimum((u > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1).astype(
        np.int8
    )


def deliver(rng, ev: Events, d: int, chunk: int, pending: dict, summary: Summary) -> Events:
    """Today's delivery for a chunk: on-time events in time order, with late events of earlier
    days and redelivered duplicates at random places; schedules today's late and duplicate ones."""
    n = len(ev)
    late = rng.random(n) < LATE_SHARE
    delay = 1 + rng.choice(3, size=n, p=LATE_DELAY_SHARE)
    dup = (rng.random(n) < DUPLICATE_SHARE) & ~late
    dup_next = dup & (rng.random(n) < DUPLICATE_NEXT_DAY)
    for k in (1, 2, 3):
        pending[(d + k, chunk)].append((True, ev.take(np.flatnonzero(late & (delay == k)))))
    pending[(d + 1, chunk)].append((False, ev.take(np.flatnonzero(dup_next))))
    arrivals = pending.pop((d, chunk), [])
    summary.late += sum(len(e) for is_late, e in arrivals if is_late)
    same_day = ev.take(np.flatnonzero(dup & ~dup_next))
    extras = Events.concat([*(e for _, e in arrivals), same_day])
    summary.duplicates += len(same_day) + sum(len(e) for is_late, e in arrivals if not is_late)
    on_time = ev.take(np.flatnonzero(~late))
    on_time = on_time.take(np.argsort(on_time.ts, kind="stable"))
    return Events.concat([on_time, extras]).take(interleave(rng, len(on_time), len(extras)))


def interleave(rng, n_main: int, n_extra: int) -> np.ndarray:
    """Order of [main..., extra...] that keeps main in place and scatters the extras among it."""
    keys = np.concatenate([np.arange(n_main, dtype=np.float64), rng.uniform(-0.5, n_main, n_extra)])
    return np.argsort(keys, kind="stable")


def write_part(
    uri: str, rng, renderer: Renderer, rows: Events, kinds: list[str], fmt: str, day: dt.date
) -> None:
    """Write one part file: the rows, plus a malformed copy of a random row per kind in `kinds`."""
    base = rng.integers(0, len(rows), len(kinds)) if kinds else np.zeros(0, np.int64)
    order = interleave(rng, len(rows), len(kinds))
    if fmt == "parquet":
        table = renderer.table(rows)
        if kinds:
            bad = malformed.parquet_rows(
                table.take(pa.array(base)).to_pylist(), kinds, rng, day, renderer.names
            )
            table = pa.concat_tables([table, pa.Table.from_pylist(bad, schema=renderer.schema)])
            table = table.take(pa.array(order))
        storage.write_parquet(table, uri)
        return
    lines = renderer.json_lines(rows)
    if kinds:
        bad = malformed.json_lines(
            [lines[int(i)].as_py() for i in base], kinds, rng, day, renderer.names
        )
        lines = pa.concat_arrays([lines, pa.array(bad, pa.string())]).take(pa.array(order))
    storage.write_bytes(uri, gzip.compress(joined_lines(lines), compresslevel=GZIP_LEVEL, mtime=0))


def joined_lines(lines: pa.Array) -> pa.Buffer:
    """The strings of an array as newline-terminated lines, in one buffer (no Python copies)."""
    terminated = pc.binary_join_element_wise(lines, "\n", "")  # a fresh array: offset 0
    offsets = np.frombuffer(terminated.buffers()[1], np.int32, len(terminated) + 1)
    data = terminated.buffers()[2]
    if data is None or not len(terminated):
        return pa.py_buffer(b"")
    return data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def write_truth(
    out: str, day: dt.date, profile_ids: pa.Array, probs: dict[str, np.ndarray]
) -> None:
    """The truth partition of a day: one row per profile seen so far, one column per horizon
    (then the observable oracle's, `<column>_observable`)."""
    uri = storage.partition(storage.join(out, TRUTH), day)
    storage.delete(uri)
    table = pa.table(
        {"profile_id": profile_ids, **{k: pa.array(v, pa.float64()) for k, v in probs.items()}}
    )
    storage.write_parquet(table, storage.join(uri, "part-00000.parquet"))
    storage.mark_complete(uri)
