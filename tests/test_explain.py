"""Explanations on a real model trained (trainer's own code, CPU) on histories where one event
decides the outcome: faithfulness, completeness, leave-one-out against a re-encoding oracle,
the CLI (outputs, privacy, exit codes), --top and the global summary."""

from __future__ import annotations

import datetime as dt
import json

import _explain_data as data
import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from _training_data import histories_table
from conftest import make_config
from typer.testing import CliRunner

from propensity import storage
from propensity.attribution import render as summary_render
from propensity.attribution.integrated_gradients import integrated_gradients, leave_one_out
from propensity.attribution.summary import HISTORY_COLUMNS, global_summary, sample_histories
from propensity.cli import app
from propensity.explain import lookup, render
from propensity.explain.profile import explain_ids, explain_rows
from propensity.model.batches import encode
from propensity.pseudonym import pseudonymise
from propensity.registry import load_model, store
from propensity.training.run import train

pytestmark = pytest.mark.slow
DAY = data.INPUT_DAY
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A champion trained on planted histories, and predictions(DAY) scored by it."""
    root = tmp_path_factory.mktemp("explain")
    sets = [f"storage.root={root}/data", *data.SETTINGS, f"training.work_dir={root}/work"]
    cfg = make_config(root / "data", *sets[1:])
    events = data.simulate(500, seed=3)
    data.write(cfg, events)
    meta = train(cfg, data.TRAIN_DAY)
    assert store.champion_version(cfg) == meta["version"]
    # The training examples' own day, before the model's training date: named explicitly (the
    # champion as of that day would be none).
    result = runner.invoke(app, ["score", "--date", DAY.isoformat(), "--model", meta["version"],
                                 "--set", sets[0]])
    assert result.exit_code == 0, result.output
    return cfg, sets[0], events


def stored(cfg, raw: str) -> str:
    return pseudonymise([raw], cfg.pseudonym_key())[0]


def cli(storage_set: str, *args: str):
    return runner.invoke(app, ["explain", "--date", DAY.isoformat(), *args, "--set", storage_set])


def test_the_decisive_event_gets_the_largest_contribution(world):
    cfg, _, _ = world
    planted, quiet = explain_ids(cfg, DAY, [stored(cfg, data.PLANTED), stored(cfg, data.QUIET)])
    contrib = np.array([e["contribution"] for e in planted["events"]])
    loo = np.array([e["leave_one_out"] for e in planted["events"]])
    running = np.array([e["running_probability"] for e in planted["events"]])
    assert [e["event_type"] for e in planted["events"]] == data.PLANTED_TYPES
    # Both methods single out the checkout, and it pushes the prediction up.
    assert int(np.argmax(np.abs(contrib))) == data.PLANTED_DECISIVE and contrib.max() > 0
    assert int(np.argmax(np.abs(loo))) == data.PLANTED_DECISIVE and loo.max() > 0
    # The running prediction jumps at the checkout, and the same history without it scores low.
    assert int(np.argmax(np.diff(running))) + 1 == data.PLANTED_DECISIVE
    assert planted["prediction"] > quiet["prediction"] + 0.3
    assert running[-1] == pytest.approx(planted["prediction"], abs=1e-5)


def test_contributions_sum_to_the_change_from_the_baseline(world):
    cfg, _, _ = world
    table = storage.read_parquet(storage.partition(cfg.uri("histories"), DAY))
    ids = table.column("profile_id").to_pylist()[:6]
    scores = storage.read_parquet(storage.partition(cfg.uri("predictions"), DAY))
    for e in explain_ids(cfg, DAY, ids, with_leave_one_out=False):
        ig = e["integrated_gradients"]
        total = sum(ev["contribution"] for ev in e["events"])
        assert abs(total - (e["prediction"] - ig["baseline_prediction"])) <= ig["tolerance"]
        assert ig["within_tolerance"] and ig["completeness_gap"] <= ig["tolerance"]
        # Per-feature attributions add up to the event's contribution.
        for ev in e["events"]:
            assert sum(ev["contribution_by_feature"].values()) == pytest.approx(
                ev["contribution"], abs=1e-4)
        # The explained prediction is the one the scoring stage wrote.
        row = scores.filter(pc.equal(scores.column("profile_id"), e["profile_id"]))
        assert row.column("order_7d")[0].as_py() == pytest.approx(e["prediction"], abs=1e-5)


def test_integration_is_refined_until_complete(world):
    cfg, _, _ = world
    model, _ = load_model(cfg)
    table = lookup.find_histories(cfg, DAY, [stored(cfg, data.PLANTED), stored(cfg, data.QUIET)])
    batch = encode(table, model.spec, DAY).batch(np.arange(2))
    coarse = integrated_gradients(model, batch, 0, steps=2, tolerance=10.0)  # never refined
    fine = integrated_gradients(model, batch, 0, steps=2, tolerance=1e-3)
    assert coarse.steps == 2 and fine.steps > 2
    assert coarse.gap.max() > 1e-3 >= fine.gap.max()
    with torch.no_grad():
        direct = torch.sigmoid(model(batch)[:, 0]).numpy()
    np.testing.assert_allclose(fine.prediction, direct, atol=1e-6)
    # Padding steps of the shorter history get nothing.
    short = int(np.argmin(batch.lengths.numpy()))
    assert np.all(fine.contributions[short, int(batch.lengths[short]):] == 0)


def test_leave_one_out_matches_rescoring_the_history_without_the_event(world):
    cfg, _, events = world
    model, _ = load_model(cfg)
    pid = stored(cfg, data.PLANTED)
    table = lookup.find_histories(cfg, DAY, [pid])
    full, loo = leave_one_out(model, table, model.spec, DAY, 0)
    for i in (0, data.PLANTED_DECISIVE, len(data.PLANTED_TYPES) - 1):
        kept = [ev for k, ev in enumerate(events[data.PLANTED]) if k != i]
        oracle = histories_table({pid: kept}, DAY)
        with torch.no_grad():
            p = torch.sigmoid(model(encode(oracle, model.spec, DAY).batch(np.arange(1)))[0, 0])
        assert full - float(p) == pytest.approx(loo[i], abs=1e-6)


def test_lookup_reads_only_the_asked_profiles_in_order(world):
    cfg, _, _ = world
    whole = storage.read_parquet(storage.partition(cfg.uri("histories"), DAY))
    ids = whole.column("profile_id").to_pylist()
    wanted = [ids[-1], ids[0], ids[len(ids) // 2], "f" * 32]
    found = lookup.find_histories(cfg, DAY, wanted)
    assert found.column("profile_id").to_pylist() == wanted[:3]
    for row in found.to_pylist():
        assert row == whole.select(HISTORY_COLUMNS).to_pylist()[ids.index(row["profile_id"])]
    # Row-group statistics leave at most one candidate row group per (sorted) file.
    files = storage.parquet_files(storage.partition(cfg.uri("histories"), DAY))
    candidates = 0
    for uri in files:
        pf = storage.open_parquet(uri)
        assert pf.num_row_groups > 1
        column = lookup._id_column(pf, uri)
        candidates += sum(lookup._may_hold(pf, g, column, [ids[0]])
                          for g in range(pf.num_row_groups))
    assert 1 <= candidates <= len(files)


def test_cli_outputs_and_never_shows_the_raw_id(world, tmp_path):
    cfg, storage_set, _ = world
    out = tmp_path / "e"
    result = cli(storage_set, "--profile", data.PLANTED, "--json", f"{out}.json",
                 "--html", f"{out}.html", "--png", f"{out}.png")
    assert result.exit_code == 0, result.output
    pid = stored(cfg, data.PLANTED)
    assert pid in result.output and "checkout" in result.output and "gap" in result.output
    document = json.loads((tmp_path / "e.json").read_text())
    page = (tmp_path / "e.html").read_text()
    for text in (result.output, json.dumps(document), page):
        assert data.PLANTED not in text and "RAW-ID" not in text
    assert document["profile_id"] == pid and document["n_events"] == len(data.PLANTED_TYPES)
    assert document["integrated_gradients"]["within_tolerance"]
    assert page.count("<tr>") == 1 + len(data.PLANTED_TYPES) and "data:image/png;base64," in page
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The same explanation by pseudonymised id (as found in predictions files).
    again = cli(storage_set, "--profile", pid, "--pseudonymised", "--json", f"{out}2.json",
                "--no-leave-one-out")
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "e2.json").read_text())
    assert [e["contribution"] for e in second["events"]] == [
        e["contribution"] for e in document["events"]]
    assert second["leave_one_out"] is None


def test_cli_exit_codes(world, tmp_path):
    cfg, storage_set, _ = world
    unknown = cli(storage_set, "--profile", "nobody-RAW-ID")
    assert unknown.exit_code == 3, unknown.output
    assert "not in the histories" in unknown.output and "nobody-RAW-ID" not in unknown.output
    assert "RAW-ID" not in unknown.output
    missing_day = runner.invoke(app, ["explain", "--date", "2026-01-01", "--profile",
                                      data.PLANTED, "--set", storage_set])
    assert missing_day.exit_code == 3 and "dt=2026-01-01" in missing_day.output
    assert cli(storage_set, "--profile", data.PLANTED, "--target", "nope").exit_code == 2
    assert cli(storage_set).exit_code == 2  # neither --profile nor --top
    assert cli(storage_set, "--profile", data.PLANTED, "--top", "2").exit_code == 2
    assert cli(storage_set, "--top", "2", "--summary", "5").exit_code == 2
    bad_date = runner.invoke(app, ["explain", "--date", "yesterday", "--profile", "x"])
    assert bad_date.exit_code == 2 and "--date" in bad_date.output
    no_model = runner.invoke(app, ["explain", "--date", DAY.isoformat(), "--profile",
                                   data.PLANTED, "--set", f"storage.root={tmp_path}/empty",
                                   "--set", f"storage.histories={cfg.uri('histories')}"])
    assert no_model.exit_code == 3 and "champion" in no_model.output
    no_predictions = cli(f"storage.predictions={tmp_path}/none", "--top", "2", "--set",
                         storage_set)
    assert no_predictions.exit_code == 3, no_predictions.output


def test_top_explains_the_highest_scored_profiles(world, tmp_path):
    cfg, storage_set, _ = world
    result = cli(storage_set, "--top", "3", "--json", str(tmp_path / "top.json"),
                 "--png", str(tmp_path / "top.png"), "--no-leave-one-out")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "top.json").read_text())
    scores = storage.read_parquet(storage.partition(cfg.uri("predictions"), DAY))
    order = np.argsort(-scores.column("order_7d").to_numpy(), kind="stable")[:3]
    expected = [scores.column("profile_id")[int(i)].as_py() for i in order]
    assert [p["profile_id"] for p in document["profiles"]] == expected
    for p in document["profiles"]:
        assert p["prediction"] == pytest.approx(p["scored"]["score"], abs=1e-5)
        assert p["model_version"] == p["scored"]["model_version"]
        assert p["profile_id"][:12] in result.output
    assert (tmp_path / "top.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_accepts_the_prefix_top_prints(world, tmp_path):
    _, storage_set, _ = world
    top = cli(storage_set, "--top", "2", "--json", str(tmp_path / "top.json"),
              "--no-leave-one-out")
    assert top.exit_code == 0, top.output
    first = json.loads((tmp_path / "top.json").read_text())["profiles"][0]["profile_id"]
    printed = first[:12] + "…"
    assert printed in top.output and first not in top.output
    # As copied from the table (the ellipsis says it is pseudonymised), and as a bare prefix.
    for args in (["--profile", printed], ["--profile", first[:12], "--pseudonymised"],
                 ["--profile", first, "--pseudonymised"]):
        result = cli(storage_set, *args, "--no-leave-one-out", "--json", str(tmp_path / "one.json"))
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "one.json").read_text())["profile_id"] == first


def test_profile_prefix_errors(world):
    cfg, storage_set, _ = world
    table = storage.read_parquet(storage.partition(cfg.uri("histories"), DAY))
    ids = sorted(table.column("profile_id").to_pylist())
    shared = ids[0][:1]
    sharing = [i for i in ids if i.startswith(shared)]
    assert len(sharing) > 1  # 500 profiles, 16 first characters
    ambiguous = cli(storage_set, "--profile", shared, "--pseudonymised")
    assert ambiguous.exit_code == 2, ambiguous.output
    message = " ".join(ambiguous.output.split())
    assert f"{len(sharing)} pseudonymised ids" in message and "give more characters" in message
    assert sharing[0][:5] + "…" in message
    unmatched = next(p for p in (f"{n:06x}" for n in range(1 << 24))
                     if not any(i.startswith(p) for i in ids))
    nothing = cli(storage_set, "--profile", unmatched + "…")
    assert nothing.exit_code == 3 and "no pseudonymised id" in nothing.output, nothing.output
    not_hex = cli(storage_set, "--profile", "nobody", "--pseudonymised")
    assert not_hex.exit_code == 2 and "lowercase hex" in not_hex.output
    # A raw id that is not found hints at --pseudonymised.
    raw = cli(storage_set, "--profile", ids[0][:12])
    assert raw.exit_code == 3 and "--pseudonymised" in raw.output


def test_prefix_lookup_finds_the_first_middle_and_last_ids(world):
    cfg, _, _ = world
    table = storage.read_parquet(storage.partition(cfg.uri("histories"), DAY))
    ids = sorted(table.column("profile_id").to_pylist())
    for whole in (ids[0], ids[len(ids) // 2], ids[-1]):
        # The shortest prefix no other id shares.
        n = next(k for k in range(1, len(whole) + 1)
                 if sum(i.startswith(whole[:k]) for i in ids) == 1)
        assert lookup.resolve_prefix(cfg, DAY, whole[:n]) == whole
        assert lookup.resolve_prefix(cfg, DAY, whole) == whole


def test_global_summary_finds_the_deciding_event_type(world, tmp_path):
    cfg, storage_set, _ = world
    summary = global_summary(cfg, DAY, n_profiles=48, seed=1)
    assert summary["profiles"] == 48
    by_type = summary["by_event_type"]
    assert sum(v["events"] for v in by_type.values()) == summary["events"]
    assert sum(v["events"] for v in summary["by_recency"].values()) == summary["events"]
    assert sum(v["share_of_abs"] for v in by_type.values()) == pytest.approx(1.0, abs=1e-4)
    present = {t: v for t, v in by_type.items() if v["events"]}
    assert max(present, key=lambda t: present[t]["mean"]) == "checkout"
    assert max(present, key=lambda t: present[t]["mean_abs"]) == "checkout"
    assert (summary["max_completeness_gap"] <= 0.01) == (summary["profiles_not_complete"] == 0)
    json.dumps(summary)  # JSON-ready
    fragment = summary_render.summary_html(summary)
    assert fragment.startswith("<section>") and "data:image/png;base64," in fragment
    assert "checkout" in fragment
    # Seeded: the same sample every time, another seed another one.
    same = sample_histories(cfg, DAY, 48, seed=1).column("profile_id")
    assert same == sample_histories(cfg, DAY, 48, seed=1).column("profile_id")
    assert same != sample_histories(cfg, DAY, 48, seed=2).column("profile_id")

    result = cli(storage_set, "--summary", "12", "--html", str(tmp_path / "s.html"))
    assert result.exit_code == 0, result.output
    assert "checkout" in result.output and "7-30 days" in result.output
    assert "<section>" in (tmp_path / "s.html").read_text()


def test_a_full_length_history_is_explained_with_its_gap_reported(world):
    cfg, _, events = world
    pid = stored(cfg, data.PLANTED)
    start = data.day_ms(DAY - dt.timedelta(days=10))
    repeated = (events[data.PLANTED][:-1] * 17)[:200]
    table = histories_table({pid: [(start + i * 60_000, *ev[1:]) for i, ev in enumerate(repeated)]},
                            DAY)
    model, meta = load_model(cfg)
    [e] = explain_rows(model, meta, table, DAY)
    ig = e["integrated_gradients"]
    assert e["n_events"] == 200 and len(e["events"]) == 200
    assert all(ev["leave_one_out"] is not None for ev in e["events"])
    # Whatever the model does along the path, the reported gap is the true one and flagged.
    total = sum(ev["contribution"] for ev in e["events"])
    assert ig["completeness_gap"] == pytest.approx(abs(total - ig["expected_sum"]), abs=1e-4)
    assert ig["within_tolerance"] == (ig["completeness_gap"] <= ig["tolerance"])
    caption = str(render.profile_table(e).caption)
    assert ("NOT COMPLETE" in caption) != ig["within_tolerance"]
