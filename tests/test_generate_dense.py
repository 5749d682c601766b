"""`--session-events`: a denser stream, the planted chain with more events per session. Factor 1
is the planted stream; a factor multiplies the mean events per session of every state; a
session longer than a day is squeezed into it; bad factors exit 2 naming the option. (The
observable oracle at a factor: tests/test_oracle.py, against its brute force.)"""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest
from test_generate import files_of
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.events import behaviour as bm
from propensity.events.generate import DAY_MS, World, generate_stream, squeeze_into_day

START = dt.date(2026, 3, 2)  # a Monday


def test_factor_one_is_the_default_stream_and_a_factor_is_recorded(tmp_path):
    runs, summaries = {}, {}
    options = {"default": {}, "one": {"session_events": 1.0}, "dense": {"session_events": 4.0}}
    for name, extra in options.items():
        out = str(tmp_path / name)
        summaries[name] = generate_stream(out, START, 4, 300, seed=5, bad_share=0.02, **extra)
        runs[name] = files_of(out)
    assert runs["default"] == runs["one"]  # events, truth and generator.json
    assert sorted(runs["dense"]) == sorted(runs["default"])
    parts = [name for name in runs["default"] if name.endswith(".jsonl.gz")]
    assert len(parts) == 4  # a part a day
    assert all(runs["dense"][name] != runs["default"][name] for name in parts)
    # Noisy at this size (heavy-tailed activity); the means are checked exactly below.
    assert summaries["dense"].total_records > 2 * summaries["default"].total_records

    meta = storage.read_json(storage.join(str(tmp_path / "dense"), "_truth", "generator.json"))
    assert meta["session_events"] == 4.0
    assert meta["observable_oracle"]["session_events"] == 4.0
    np.testing.assert_allclose(meta["behaviour"]["events_per_session"], 4 * bm.EVENTS_PER_SESSION)
    plain = storage.read_json(storage.join(str(tmp_path / "one"), "_truth", "generator.json"))
    assert plain["behaviour"]["events_per_session"] == bm.EVENTS_PER_SESSION.tolist()


@pytest.mark.parametrize("factor", [1.0, 3.0, 8.0])
def test_mean_events_per_session_of_each_state_are_the_factor_times_the_planted(factor):
    """Session events (the order funnel left out) per session, by the day's latent state, over
    4,000 profiles x 8 days: within 4 standard errors of the geometric's mean factor x planted."""
    n, days = 4000, 8
    world = World(1, n, days, session_events=factor)
    events, sessions = np.zeros(len(bm.STATES)), np.zeros(len(bm.STATES))
    for d in range(days):
        day = START + dt.timedelta(days=d)
        rng = np.random.default_rng([1, d, 0])
        _, state, ordered = world.simulate(rng, d, day, 0, n, world.catalogue.popularity(d), 0)
        seen, present = world.observed, state >= 0
        np.add.at(events, state[present], seen.types.sum(axis=1)[present])
        np.add.at(sessions, state[present], seen.sessions[present])
        world.advance(rng, 0, n, state, ordered)
    assert (sessions > 200).all(), sessions
    want = factor * bm.EVENTS_PER_SESSION
    p = 1.0 / want
    standard_error = np.sqrt((1 - p) / p**2 / sessions)
    z = (events / sessions - want) / standard_error
    assert (np.abs(z) < 4).all(), z


def test_a_session_longer_than_a_day_is_squeezed_into_it():
    ev_sess = np.array([0, 0, 0, 1, 1])  # the session of each event
    offset = np.array([0, DAY_MS, 2 * DAY_MS, 0, 1000])  # from its session's first event
    duration = np.array([2 * DAY_MS, 1000])
    squeeze_into_day(offset, duration, ev_sess)
    assert offset.tolist() == [0, (DAY_MS - 1) // 2, DAY_MS - 1, 0, 1000]
    assert duration.tolist() == [DAY_MS - 1, 1000]


def test_cli_session_events_is_recorded_and_bad_factors_exit_2(tmp_path):
    runner = CliRunner()
    common = ["generate", "--start", "2026-03-02", "--days", "2", "--profiles", "200"]
    out = str(tmp_path / "events")
    result = runner.invoke(app, [*common, "--out", out, "--session-events", "8"])
    assert result.exit_code == 0, result.output
    assert storage.read_json(f"{out}/_truth/generator.json")["session_events"] == 8.0
    for bad in ("0", "-1", "0.4", "21", "nan", "inf", "many"):  # 0.4: a mean of 1 in `dormant`
        out = str(tmp_path / f"bad-{bad}")
        result = runner.invoke(app, [*common, "--out", out, "--session-events", bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "--session-events" in result.output, (bad, result.output)
        assert not os.path.exists(out)  # nothing written
