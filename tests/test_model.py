"""The model's split forward pass must agree with itself and ignore padding."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch
from _training_data import day_ms, event, histories_table, simulate

from propensity.model.batches import FeatureSpec, encode, prediction_time_ms
from propensity.model.network import COUNT_FLOOR, PropensityModel, log_age

DAY = dt.date(2026, 1, 20)


def test_forward_paths_agree_and_padding_is_ignored(config):
    torch.manual_seed(0)
    table = histories_table(simulate(20, DAY - dt.timedelta(days=10), DAY, seed=1), DAY)
    enc = encode(table, FeatureSpec.from_config(config), DAY)
    model = PropensityModel.from_config(config).eval()
    rows = np.arange(len(enc))
    batch = enc.batch(rows)
    with torch.no_grad():
        logits = model(batch)
        assert logits.shape == (len(rows), len(config.target_names))
        split = model.forward_from_embedded(model.embed(batch), batch)
        torch.testing.assert_close(split, logits)
        running = model.running_logits(batch)
        last = running[torch.arange(len(rows)), batch.lengths - 1]
        torch.testing.assert_close(last, logits)
        # Each row alone (padded only to its own length) scores the same as in the big batch.
        for r in rows[:5]:
            torch.testing.assert_close(model(enc.batch(np.array([r]))), logits[r : r + 1])
    x = model.embed(batch)
    assert x.shape[-1] == model.input_size
    assert model.feature_groups["weekday"].stop == model.input_size


def test_log_age_is_the_time_from_each_event_to_the_prediction_time(config):
    table = histories_table(simulate(12, DAY - dt.timedelta(days=10), DAY, seed=2), DAY)
    enc = encode(table, FeatureSpec.from_config(config), DAY)
    batch = enc.batch(np.arange(len(enc)))
    age = torch.expm1(log_age(batch).double())
    end = prediction_time_ms(DAY)
    for b, stamps in enumerate(table.column("ts").to_pylist()):
        want = [(end - ts.timestamp() * 1000) / 3_600_000 for ts in stamps]
        torch.testing.assert_close(
            age[b, : len(want)], torch.tensor(want, dtype=torch.float64), rtol=1e-4, atol=1e-3
        )


def test_decayed_counts_equal_a_per_event_oracle(config):
    table = histories_table(simulate(15, DAY - dt.timedelta(days=40), DAY, seed=3), DAY)
    enc = encode(table, FeatureSpec.from_config(config), DAY)
    model = PropensityModel.from_config(config).eval()
    batch = enc.batch(np.arange(len(enc)))
    with torch.no_grad():
        x = model.embed(batch)
        w = len(config.model.count_decay_days) * len(config.events.types)
        got = torch.exp(model.decayed_counts(x, batch)[:, :w].double() / 0.25) - COUNT_FLOOR
        running = model.decayed_counts(x, batch, running=True)
    types = list(config.events.types)
    taus = [d * 24 for d in config.model.count_decay_days]
    end = prediction_time_ms(DAY)
    for b, (stamps, kinds) in enumerate(zip(table.column("ts").to_pylist(),
                                            table.column("event_type").to_pylist())):
        want = np.zeros((len(taus), len(types)))
        for ts, kind in zip(stamps, kinds):
            hours = (end - ts.timestamp() * 1000) / 3_600_000
            want[:, types.index(kind) if kind in types else 0] += np.exp(-hours / np.array(taus))
        np.testing.assert_allclose(got[b].numpy(), want.ravel(), rtol=2e-3, atol=1e-4)
        # Running counts at the last real step are the final counts; padding adds nothing.
        torch.testing.assert_close(running[b, int(batch.lengths[b]) - 1],
                                   model.decayed_counts(x, batch)[b])
        torch.testing.assert_close(running[b, -1], model.decayed_counts(x, batch)[b])


def test_session_counts_equal_a_per_event_oracle(config):
    """Sessions within each span: a history's first event and every event more than 30 minutes
    after the previous one start one; counted by their age at the prediction time."""
    from propensity.model.network import SESSION_GAP_HOURS

    table = histories_table(simulate(15, DAY - dt.timedelta(days=40), DAY, seed=4), DAY)
    enc = encode(table, FeatureSpec.from_config(config), DAY)
    model = PropensityModel.from_config(config).eval()
    assert model.n_sessions == len(config.model.count_decay_days)
    batch = enc.batch(np.arange(len(enc)))
    with torch.no_grad():
        x = model.embed(batch)
        counts = model.decayed_counts(x, batch)
        got = torch.expm1(counts[:, -model.n_sessions:].double() / 0.25)
        running = model.decayed_counts(x, batch, running=True)
    end = prediction_time_ms(DAY)
    spans = np.array(config.model.count_decay_days) * 24
    several = 0
    for b, stamps in enumerate(table.column("ts").to_pylist()):
        ms = sorted(ts.timestamp() * 1000 for ts in stamps)
        starts = [t for i, t in enumerate(ms)
                  if i == 0 or t - ms[i - 1] > SESSION_GAP_HOURS * 3_600_000]
        want = [sum((end - t) / 3_600_000 <= span for t in starts) for span in spans]
        np.testing.assert_allclose(got[b].numpy(), want, atol=1e-3)
        several += len(starts) > 1 and len(starts) < len(ms)
        torch.testing.assert_close(running[b, int(batch.lengths[b]) - 1], counts[b])
    assert several  # histories with both several sessions and several events in one


def test_only_targets_on_event_types_read_the_sessions_in_their_wide_part(tmp_path):
    from pathlib import Path

    from propensity.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / "two-targets.yaml",
                      overrides=[f"storage.root={tmp_path}"])
    model = PropensityModel.from_config(cfg)
    end = model.wide_mask.shape[1] - model.n_shares
    sessions = model.wide_mask[:, end - model.n_sessions : end]
    assert sessions[0].all() and not sessions[1].any()  # order_7d, shoes_order_14d
    off = PropensityModel.from_config(load_config(overrides=["model.session_counts=false"]))
    assert off.n_sessions == 0 and off.n_counts == PropensityModel.from_config(
        load_config()).n_counts - len(cfg.model.count_decay_days)


def _browsing(n_profiles: int, shoes, seed: int) -> dict[str, list]:
    """Histories that look at articles again, within a session and across a search, and in
    sessions on other days; some articles are shoes (`shoes`: their category hash)."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in range(n_profiles):
        pool = [(int(rng.integers(1, 2**62)), shoes if rng.random() < 0.4 else 7)
                for _ in range(4)]
        t, events = day_ms(DAY - dt.timedelta(days=5)), []
        for _ in range(int(rng.integers(1, 25))):
            t += int(rng.choice([60_000, 20 * 60_000, 3 * 3_600_000]))  # one in 3: a new session
            if rng.random() < 0.2:
                events.append(event(t, "search"))
                continue
            article, category = pool[int(rng.integers(0, len(pool)))]
            events.append(event(t, str(rng.choice(["view", "add_to_cart"])), article, 1,
                                category, 10.0))
        out[f"p{p:03d}"] = events
    return out


def test_item_shares_equal_a_per_event_oracle(tmp_path):
    """A fresh article is an event with an article other than the one of the session's previous
    event with an article (or the session's first); a target's share is (c * prior + its fresh
    articles) / (c + all fresh articles), the prior its share over the rows it was fit on."""
    from pathlib import Path

    from propensity.config import load_config
    from propensity.model.labels import item_matches
    from propensity.model.network import ITEM_SHARE_PRIOR_ARTICLES, SESSION_GAP_HOURS

    cfg = load_config(Path(__file__).parents[1] / "configs" / "two-targets.yaml",
                      overrides=[f"storage.root={tmp_path}"])
    shoes = cfg.targets[1]
    table = histories_table(_browsing(30, shoes.hashed("categories")[0], seed=5), DAY)
    enc = encode(table, FeatureSpec.from_config(cfg), DAY)
    model = PropensityModel.from_config(cfg).eval()
    assert model.n_shares == 1
    batch = enc.batch(np.arange(len(enc)))
    model.fit_item_share_prior([enc.batch(np.arange(0, 12)), enc.batch(np.arange(12, len(enc)))])
    with torch.no_grad():
        x = model.embed(batch)
        got = model.decayed_counts(x, batch)[:, -1] / 0.25
        running = model.decayed_counts(x, batch, running=True)[..., -1] / 0.25
    match = iter(item_matches(table, shoes))
    fresh = []
    for stamps, articles in zip(table.column("ts").to_pylist(), table.column("article").to_pylist()):
        last, shown, row = None, None, [0, 0]
        for ts, article in zip(stamps, articles):
            on_shoes = next(match)
            ms = ts.timestamp() * 1000
            if last is not None and ms - last > SESSION_GAP_HOURS * 3_600_000:
                shown = None  # a new session
            last = ms
            if article is not None and article != shown:
                row = [row[0] + on_shoes, row[1] + 1]
            shown = article if article is not None else shown
        fresh.append(row)
    on, every = np.array(fresh, dtype=float).T
    prior = on.sum() / every.sum()
    assert float(model.item_share_prior) == pytest.approx(prior, rel=1e-6)
    c = ITEM_SHARE_PRIOR_ARTICLES
    np.testing.assert_allclose(got.numpy(), np.log((c * prior + on) / (c + every)), atol=1e-5)
    assert (every < (table.column("n_events").to_numpy())).sum() > 10  # repeats were left out
    assert 0 < on.sum() < every.sum()
    last = batch.lengths - 1
    torch.testing.assert_close(running[torch.arange(len(enc)), last], got)


def test_targets_on_items_read_their_share_not_their_item_counts(tmp_path):
    from pathlib import Path

    from propensity.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / "two-targets.yaml",
                      overrides=[f"storage.root={tmp_path}"])
    model = PropensityModel.from_config(cfg)
    counts = model.wide_mask[:, len(model.spec.context_features):]
    assert counts[1, -1] == 1 and counts[0, -1] == 0  # shoes reads its share, order_7d not
    without = PropensityModel.from_config(
        load_config(Path(__file__).parents[1] / "configs" / "two-targets.yaml",
                    overrides=[f"storage.root={tmp_path}", "model.item_share=false"]))
    # Without the share, the item target reads its own items' counts instead: more inputs.
    assert without.n_shares == 0 and without.n_counts == model.n_counts - 1
    assert without.wide_mask[1].sum() > model.wide_mask[1].sum() - 1


def test_the_wide_part_takes_the_l2_strength_with_the_lowest_validation_loss():
    """Few rows and many useless inputs: a strong penalty wins on held-out rows, and the fit
    returned is that C's; without validation rows of both classes, C = 1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from propensity.model.network import WIDE_C, _fit_wide_target

    rng = np.random.default_rng(0)
    z = rng.normal(size=(3000, 60))
    y = (rng.random(3000) < 1 / (1 + np.exp(-(-2.0 + 0.8 * z[:, 0])))).astype(float)
    train, val = slice(0, 400), slice(400, None)
    fit, c = _fit_wide_target(z[train], y[train], z[val], y[val])
    losses = {k: log_loss(y[val], LogisticRegression(C=k, max_iter=2000).fit(
        z[train], y[train]).predict_proba(z[val])[:, 1]) for k in WIDE_C}
    assert c == min(losses, key=losses.get) and c < 1
    np.testing.assert_allclose(log_loss(y[val], fit.predict_proba(z[val])[:, 1]), losses[c],
                               rtol=1e-4)
    _, c = _fit_wide_target(z[train], y[train], z[val], np.zeros(len(y[val])))
    assert c == 1.0
