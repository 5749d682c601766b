"""`propensity aggregate` killed with SIGKILL (driver and JVM: its whole process group) at
several points of a run, then run again: histories(D) and quarantine(D) end identical to an
uninterrupted run's, and after every kill each partition is either unmarked (readers refuse it)
or marked and identical to the uninterrupted run's. The runs that are killed are real
processes; the runs after the kills are the same job in this process, on the shared session
(a CLI process each would add a JVM start, about 10 s, and test nothing more: the CLI's exit
codes are tested in test_aggregate_job.py)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _histories_data import QUICK_JVM, snapshot_rows
from conftest import make_config

from propensity import storage
from propensity.events.generate import generate_stream
from propensity.histories.job import run

START = dt.date(2026, 1, 1)
DAY = START + dt.timedelta(days=2)
OVERRIDES = ("events.max_bad_share=0.2", "spark.master=local[1]", QUICK_JVM)
CLI = Path(sys.executable).with_name("propensity")

pytestmark = pytest.mark.slow


def quarantine_rows(cfg) -> list[dict]:
    """The quarantine's rows, its source files named below the events root (roots differ)."""
    table = storage.read_parquet(storage.partition(cfg.uri("quarantine"), DAY))
    rows = table.sort_by([("source_file", "ascending"), ("raw", "ascending")]).to_pylist()
    return [{**r, "source_file": r["source_file"].split("/events/", 1)[1]} for r in rows]


def state(cfg) -> dict[str, list[dict] | None]:
    """What a reader gets of each partition: its rows when marked complete, else None."""
    return {
        "histories": snapshot_rows(cfg, DAY)
        if storage.is_complete(storage.partition(cfg.uri("histories"), DAY)) else None,
        "quarantine": quarantine_rows(cfg)
        if storage.is_complete(storage.partition(cfg.uri("quarantine"), DAY)) else None,
    }  # fmt: skip


def aggregate(root: Path, kill_when: Callable[[float], bool]) -> int:
    """`propensity aggregate --full` in its own process group, SIGKILLed as a group as soon as
    `kill_when(seconds since start)` says so. The exit status (-9 when killed)."""
    args = [str(CLI), "aggregate", "--date", str(DAY), "--full",
            "--set", f"storage.root={root}", *(a for o in OVERRIDES for a in ("--set", o))]  # fmt: skip
    proc = subprocess.Popen(
        args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    t0 = time.monotonic()
    while proc.poll() is None:
        if kill_when(time.monotonic() - t0):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        assert time.monotonic() - t0 < 300, "aggregate did not finish"
        time.sleep(0.01)
    # Nothing of the group (the JVM in particular) lives on to write later.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"process group {proc.pid} still alive after the kill")
    print(f"aggregate: exit {proc.returncode} after {time.monotonic() - t0:.1f} s")
    return proc.returncode


def test_sigkill_at_any_point_then_rerun_gives_the_uninterrupted_result(spark, tmp_path):
    ref_cfg = make_config(tmp_path / "reference", *OVERRIDES)
    generate_stream(ref_cfg.uri("events"), START, 3, 150, seed=11, bad_share=0.03)
    run(spark, ref_cfg, DAY, "full")
    reference = state(ref_cfg)
    assert reference["histories"] and reference["quarantine"]

    root = tmp_path / "killed"
    cfg = make_config(root, *OVERRIDES)
    generate_stream(cfg.uri("events"), START, 3, 150, seed=11, bad_share=0.03)
    hist = Path(storage.partition(cfg.uri("histories"), DAY))
    quar = Path(storage.partition(cfg.uri("quarantine"), DAY))

    def consistent() -> None:
        now = state(cfg)
        for name in now:
            assert now[name] in (None, reference[name]), f"{name}: marked but not the right rows"

    def quarantine_committed(_s: float) -> bool:
        return any(quar.glob("part-*.parquet"))

    def snapshot_being_written(_s: float) -> bool:
        # Spark has dropped the old snapshot (mode overwrite) and writes the new one here.
        return (hist / "_temporary").exists()

    # A first run killed while Python and the JVM start, then one killed once the quarantine
    # is written (histories not yet): nothing may be marked.
    assert aggregate(root, lambda s: s > 1.0) == -signal.SIGKILL
    consistent()
    assert aggregate(root, quarantine_committed) == -signal.SIGKILL
    assert state(cfg) == {"histories": None, "quarantine": None}
    # Run again: the uninterrupted result (the killed run's lease is taken over at once: its
    # process is gone from this host).
    run(spark, cfg, DAY, "full")
    assert state(cfg) == reference
    # A re-run over the complete day, killed while the new snapshot is being written (the old
    # one already dropped): the day is unmarked; run again, it is the uninterrupted result.
    assert aggregate(root, snapshot_being_written) == -signal.SIGKILL
    assert state(cfg)["histories"] is None
    consistent()
    run(spark, cfg, DAY, "full")
    assert state(cfg) == reference
