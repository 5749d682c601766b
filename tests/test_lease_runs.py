"""The same command started twice at once, as real processes (a double-fired cron, a retry beside
a slow first try): for aggregate, train, score, monitor and daily, locally, and score on the
loopback S3 endpoint. The result equals a single run's, or the second refuses with exit 13
naming the holder; no partition holds two runs' files. And a lease holder killed with SIGKILL:
the next run refuses while its lease is fresh and takes over once it is stale (a holder on
another host), or at once (one gone from this host)."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _histories_data import QUICK_JVM, snapshot_rows
from _scoring_data import publish_model, write_histories
from _training_data import simulate, write_histories_days
from conftest import make_config

from propensity import lease, storage
from propensity.errors import LeaseHeld
from propensity.events.generate import generate_stream
from propensity.histories.job import run as aggregate_run
from propensity.monitoring.job import RESULT
from propensity.registry import store
from propensity.scoring.run import run as score_run

pytestmark = pytest.mark.slow
START = dt.date(2026, 1, 1)
DAY = START + dt.timedelta(days=2)
SPARK = ("spark.master=local[1]", "spark.shuffle_partitions=2", "histories.output_files=2",
         QUICK_JVM)  # fmt: skip
REFUSED = "is being written by another run"
LEASE_HELD = 13
CLI = Path(sys.executable).with_name("propensity")


def start(root, *args: str, sets: tuple[str, ...] = ()) -> subprocess.Popen:
    """`propensity ARGS --set storage.root=ROOT ...` in its own process group."""
    cmd = [str(CLI), *args, "--set", f"storage.root={root}"]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "COLUMNS": "200"})  # fmt: skip


def twice(root, *args: str, sets: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """The command started twice at once; (exit code, output) of each, the winner first."""
    procs = [start(root, *args, sets=sets) for _ in range(2)]
    done = [(p.wait(timeout=400), p.stdout.read()) for p in procs]
    for code, out in done:
        print(f"exit {code}:\n{out[-1500:]}")
    return sorted(done, key=lambda d: d[0])


def one_or_refused(done: list[tuple[int, str]], stage: str) -> bool:
    """Both succeeded, or one did and the other refused naming the holder; True if refused."""
    (first, _), (second, out) = done
    assert first == 0
    if second == 0:
        return False  # the second started after the first had finished: a plain rerun
    assert second == LEASE_HELD, out
    flat = " ".join(out.split())
    assert REFUSED in flat and f"{stage} dt=" in flat and "pid " in flat, flat
    return True


def no_lease_left(root) -> None:
    assert storage.list_files(storage.join(str(root), lease.LEASES), recursive=True) == []


# --- aggregate and daily (Spark) ------------------------------------------------------------


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    events = tmp_path_factory.mktemp("stream") / "events"
    generate_stream(str(events), START, 3, 150, seed=11, bad_share=0.03)
    return events


@pytest.fixture(scope="module")
def single_aggregate(spark, stream, tmp_path_factory):
    """histories(D) of one uninterrupted `aggregate --full`."""
    cfg = make_config(tmp_path_factory.mktemp("single"), f"storage.events={stream}", *SPARK)
    aggregate_run(spark, cfg, DAY, "full")
    return snapshot_rows(cfg, DAY)


def one_run_of_files(cfg) -> None:
    """Each partition's folder holds only the Parquet files its marker lists, of one Spark job
    (one write id in their names)."""
    for name in ("histories", "quarantine"):
        part = storage.partition(cfg.uri(name), DAY)
        present = storage.list_files(part, suffix=".parquet")
        assert storage.parquet_files(part) == present, name
        jobs = {re.search(r"part-\d+-([0-9a-f-]{36})", f).group(1) for f in present}
        assert len(jobs) == 1, (name, present)


def test_aggregate_twice_at_once(stream, single_aggregate, tmp_path):
    sets = (f"storage.events={stream}", "events.max_bad_share=0.2", *SPARK)
    done = twice(tmp_path, "aggregate", "--date", str(DAY), "--full", sets=sets)
    one_or_refused(done, "aggregate")
    cfg = make_config(tmp_path, *sets)
    assert snapshot_rows(cfg, DAY) == single_aggregate
    one_run_of_files(cfg)
    no_lease_left(tmp_path)


def test_daily_twice_at_once_never_interleaves(stream, single_aggregate, tmp_path):
    sets = (f"storage.events={stream}", "events.max_bad_share=0.2", *SPARK)
    done = twice(tmp_path, "daily", "--date", str(DAY), "--only", "aggregate", sets=sets)
    if one_or_refused(done, "daily"):
        assert "run record" not in done[1][1]  # refused before any step
    cfg = make_config(tmp_path, *sets)
    assert snapshot_rows(cfg, DAY) == single_aggregate
    one_run_of_files(cfg)
    no_lease_left(tmp_path)


def test_sigkilled_holder_blocks_while_fresh_then_is_taken_over(
    spark, stream, single_aggregate, tmp_path
):
    # The holder and the run that takes over are CLI processes; the run in between is the job in
    # this process, which reads the lease at once (a CLI process reads it only after starting
    # Python and a JVM, 9 s at load 11, which the stale time had to outlast), so the lease can go
    # stale soon. Long enough that a live run's renewal (every quarter of it) is never late.
    stale = 8
    sets = (f"storage.events={stream}", "events.max_bad_share=0.2", f"lease.stale_after_s={stale}",
            *SPARK)  # fmt: skip
    args = ("aggregate", "--date", str(DAY), "--full")
    cfg = make_config(tmp_path, *sets)
    leases = lease.folder(cfg, "aggregate", lease.day_key(DAY))
    holder = start(tmp_path, *args, sets=sets)
    deadline = time.monotonic() + 300
    while not storage.list_files(leases):
        assert holder.poll() is None and time.monotonic() < deadline, holder.stdout.read()
        time.sleep(0.05)
    time.sleep(1.0)  # inside the Spark job, after the lease
    os.killpg(holder.pid, signal.SIGKILL)
    assert holder.wait() == -signal.SIGKILL
    [held] = storage.list_files(leases)  # nobody released it
    # As if the holder had run on another host (an EMR node lost): its process cannot be seen
    # from here, only its heartbeat tells (a holder gone from this host is taken over at once).
    storage.write_json(held, {**storage.read_json(held), "host": "another-host"})
    heartbeat = storage.modified_at(held)

    with pytest.raises(LeaseHeld) as refused:
        aggregate_run(spark, cfg, DAY, "full")
    assert time.time() - heartbeat < stale, "too slow to see the lease fresh"
    message = " ".join(str(refused.value).split())
    assert REFUSED in message and "host another-host" in message, message
    assert not storage.is_complete(storage.partition(cfg.uri("histories"), DAY))

    time.sleep(max(0.0, heartbeat + stale + 0.5 - time.time()))
    third = start(tmp_path, *args, sets=sets)
    out = third.communicate(timeout=300)[0]
    assert third.returncode == 0, out
    assert "stale lease taken over" in out
    assert snapshot_rows(cfg, DAY) == single_aggregate
    one_run_of_files(cfg)
    no_lease_left(tmp_path)


# --- train -------------------------------------------------------------------------------------

TRAIN_DAY = dt.date(2026, 1, 20)


def test_train_twice_at_once_never_shares_a_version(tmp_path):
    sets = (f"training.work_dir={tmp_path}/work", "training.max_epochs=1", "model.hidden_size=8",
            "training.accelerator=cpu", "gate.min_auc=0", "model.article_buckets=4096")  # fmt: skip
    cfg = make_config(tmp_path, *sets)
    events = simulate(300, TRAIN_DAY - dt.timedelta(days=30), TRAIN_DAY, seed=11)
    write_histories_days(cfg, events, [TRAIN_DAY - dt.timedelta(days=7), TRAIN_DAY])
    done = twice(tmp_path, "train", "--date", str(TRAIN_DAY), sets=sets)
    refused = one_or_refused(done, "train")
    versions = store.version_names(cfg)
    assert versions == ([f"{TRAIN_DAY}.1"] if refused else [f"{TRAIN_DAY}.1", f"{TRAIN_DAY}.2"])
    moves = [m["version"] for m in store.read_champion(cfg)["history"]]
    assert len(moves) == len(set(moves)) == len(versions)
    no_lease_left(tmp_path)


# --- score (local and S3) and monitor ----------------------------------------------------------


def scored_rows(cfg) -> list[dict]:
    table = storage.read_parquet(storage.partition(cfg.uri("predictions"), DAY))
    return table.sort_by("profile_id").to_pylist()


def score_setup(root):
    cfg = make_config(root)
    publish_model(cfg, f"{DAY}.1")
    write_histories(cfg, DAY, 400, files=2)
    return cfg


@pytest.fixture(scope="module")
def single_score(tmp_path_factory):
    """(config, rows) of one uninterrupted score run: the score tests compare with its rows,
    the monitor test monitors its day (writing reports only)."""
    cfg = score_setup(tmp_path_factory.mktemp("single-score"))
    score_run(cfg, DAY)
    return cfg, scored_rows(cfg)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_score_twice_at_once(where, single_score, tmp_path, request):
    root = str(tmp_path) if where == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/r"
    cfg = score_setup(root)
    one_or_refused(twice(root, "score", "--date", str(DAY)), "score")
    rows = scored_rows(cfg)
    assert rows == single_score[1]
    assert len({r["profile_id"] for r in rows}) == len(rows) == 400
    no_lease_left(root)


def test_monitor_twice_at_once(single_score):
    cfg = single_score[0]
    root = cfg.storage.root
    one_or_refused(twice(root, "monitor", "--date", str(DAY)), "monitor")
    report = storage.partition(cfg.uri("reports"), DAY)
    assert storage.is_complete(report)
    written = storage.read_json(storage.join(report, RESULT))
    assert written["rows"] == 400 and written["model_version"] == f"{DAY}.1"
    no_lease_left(root)
