"""Histories where one event decides the outcome, and a model trained on them (for explain tests).

Every profile has a few noise events (view, search, add_to_cart, wishlist, remove_from_cart);
about half also have exactly one `checkout`. Profiles with a checkout order within the next days
(95%), the others rarely (3%). A model trained on this through the trainer's own code must learn
that the checkout drives the prediction, so an explanation of a planted history must give the
checkout the largest contribution.

Profile ids are stored pseudonymised, as the aggregation stage writes them; tests look profiles
up by their raw ids (`raw_id(i)`, `PLANTED`), which must never appear in any output.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from _training_data import DAY_MS, day_ms, event, histories_table

from propensity import storage
from propensity.pseudonym import pseudonymise

TRAIN_DAY = dt.date(2026, 3, 10)  # training date D; inputs are histories(D - 7)
INPUT_DAY = TRAIN_DAY - dt.timedelta(days=7)  # the snapshot the tests explain
NOISE = ["view", "search", "add_to_cart", "wishlist", "remove_from_cart"]
NOISE_P = np.array([0.45, 0.2, 0.15, 0.1, 0.1])
# A history with one decisive event in the middle: the checkout (index 5) must explain the score.
PLANTED = "planted-RAW-ID-checkout"
PLANTED_TYPES = ["view", "search", "view", "add_to_cart", "wishlist", "checkout",
                 "view", "view", "search", "view", "add_to_cart", "view"]
PLANTED_DECISIVE = PLANTED_TYPES.index("checkout")
QUIET = "planted-RAW-ID-no-checkout"  # the same history without its checkout
# Model and training settings small enough to train in seconds on 2 CPU cores.
SETTINGS = [
    "model.hidden_size=16",
    "model.type_dim=4",
    "model.article_buckets=256",
    "model.article_dim=4",
    "model.brand_buckets=64",
    "model.brand_dim=2",
    "model.category_buckets=64",
    "model.category_dim=2",
    "model.dropout=0.0",
    "training.batch_size=64",
    "training.max_epochs=6",
    "training.early_stopping_patience=3",
    "training.learning_rate=0.02",
    "training.accelerator=cpu",
]


def raw_id(i: int) -> str:
    return f"shopper-RAW-ID-{i:05d}"


def _noise_event(rng, ts: int, kind: str):
    if kind == "search":
        return event(ts, kind)
    return event(ts, kind, int(rng.integers(-(2**62), 2**62)), int(rng.integers(0, 40)),
                 int(rng.integers(0, 15)), round(float(rng.lognormal(3, 0.8)), 2))


def _planted(rng, types: list[str], order: bool) -> list:
    start = day_ms(INPUT_DAY - dt.timedelta(days=6))
    events = [_noise_event(rng, start + i * 7_200_000, kind) for i, kind in enumerate(types)]
    if order:
        events.append(event(day_ms(INPUT_DAY + dt.timedelta(days=2)) + 3_600_000, "order",
                            price=40.0))
    return events


def simulate(n_profiles: int, seed: int = 0) -> dict[str, list]:
    """Events per raw profile id, input window up to the end of INPUT_DAY, plus future orders."""
    rng = np.random.default_rng(seed)
    window_start = day_ms(INPUT_DAY - dt.timedelta(days=20))
    window = day_ms(INPUT_DAY + dt.timedelta(days=1)) - window_start
    out: dict[str, list] = {}
    for p in range(n_profiles):
        k = int(rng.integers(3, 11))
        times = np.sort(window_start + rng.integers(0, window, size=k))
        kinds = list(rng.choice(NOISE, size=k, p=NOISE_P))
        checkout = rng.random() < 0.5
        if checkout:
            kinds[int(rng.integers(0, k))] = "checkout"
        events = [_noise_event(rng, int(t), kind) for t, kind in zip(times, kinds)]
        if rng.random() < (0.95 if checkout else 0.03):
            later = day_ms(INPUT_DAY + dt.timedelta(days=int(rng.integers(1, 7))))
            events.append(event(later + int(rng.integers(0, DAY_MS)), "order", price=40.0))
        out[raw_id(p)] = events
    out[PLANTED] = _planted(rng, PLANTED_TYPES, order=True)
    quiet = [t for t in PLANTED_TYPES if t != "checkout"]
    out[QUIET] = _planted(rng, quiet, order=False)
    return out


def write(cfg, events: dict[str, list], files: int = 2, row_group: int = 100) -> None:
    """histories(INPUT_DAY) and histories(TRAIN_DAY) with pseudonymised profile ids, laid out as
    the aggregation job writes them: several files, each sorted by profile_id, small row groups."""
    ids = list(events)
    stored = dict(zip(ids, pseudonymise(ids, cfg.pseudonym_key())))
    renamed = {stored[raw]: evs for raw, evs in events.items()}
    for day in (INPUT_DAY, TRAIN_DAY):
        table = histories_table(renamed, day, cfg.histories.max_events)  # sorted by profile_id
        part = storage.partition(cfg.uri("histories"), day)
        pids = table.column("profile_id").to_pylist()
        which = np.array([int(pid[:2], 16) % files for pid in pids])
        for f in range(files):
            uri = storage.join(part, f"part-{f:05d}.parquet")
            storage.write_parquet(table.filter(which == f), uri, row_group_size=row_group)
        storage.mark_complete(part)
