"""Leases (`propensity.lease`) and the storage steps under them, on a temp folder and on a real
S3 endpoint on loopback: create, conflict, renewal, release, stale takeover, concurrent takers
in separate processes, and markers that name a partition's files."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest
from conftest import make_config

from propensity import lease, storage
from propensity.errors import ExitCode, LeaseHeld, exit_code_of
from propensity.registry import store


@pytest.fixture
def root(storage_root):
    return storage_root


def objects(cfg, stage="aggregate", key="dt=2026-01-20") -> list[str]:
    return [u.rsplit("/", 1)[-1] for u in storage.list_files(lease.folder(cfg, stage, key))]


def test_create_exclusive_creates_once(root):
    uri = storage.join(root, "x", "claim.json")
    assert storage.create_exclusive(uri, b"first")
    assert not storage.create_exclusive(uri, b"second")
    assert storage.read_bytes(uri) == b"first"
    before = storage.modified_at(uri)
    time.sleep(1.1)
    assert storage.touch(uri)
    assert storage.modified_at(uri) > before
    assert storage.read_bytes(uri) == b"first"
    storage.delete(uri)
    assert not storage.touch(uri) and storage.modified_at(uri) is None


def test_a_second_run_is_refused_naming_the_holder_and_the_way_out(root):
    cfg = make_config(root, "lease.stale_after_s=60")
    with lease.acquire(cfg, "aggregate", "dt=2026-01-20") as held:
        assert objects(cfg) == ["000001.json"]
        with pytest.raises(LeaseHeld) as refused, lease.acquire(cfg, "aggregate", held.key):
            pytest.fail("two holders")
        message = str(refused.value)
        assert exit_code_of(refused.value) == ExitCode.LEASE_HELD == 13
        for part in (f"pid {os.getpid()}", held.run_id, held.uri, "stale after 60 s", "delete"):
            assert part in message
        # Another key or stage is another lease.
        with (
            lease.acquire(cfg, "aggregate", "dt=2026-01-21"),
            lease.acquire(cfg, "score", held.key),
        ):
            pass
        held.check()
    assert objects(cfg) == []  # released
    with lease.acquire(cfg, "aggregate", "dt=2026-01-20"):
        assert objects(cfg) == ["000001.json"]


def test_released_on_error(root):
    cfg = make_config(root)
    with pytest.raises(RuntimeError, match="boom"), lease.acquire(cfg, "train", "dt=2026-01-20"):
        raise RuntimeError("boom")
    assert objects(cfg, "train") == []


def test_renewal_keeps_a_live_lease_fresh_and_notices_its_loss(root):
    cfg = make_config(root, "lease.stale_after_s=2")
    with lease.acquire(cfg, "monitor", "dt=2026-01-20") as held:
        time.sleep(3)  # longer than stale_after_s: only the renewals keep it
        with pytest.raises(LeaseHeld, match="renewed"), lease.acquire(cfg, "monitor", held.key):
            pass
        held.check()
        storage.delete(held.uri)  # an operator deletes it by hand
        deadline = time.monotonic() + 5
        while held.lost is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert held.lost and "deleted" in held.lost
        with pytest.raises(LeaseHeld, match="stopped before publishing"):
            held.check()


def test_a_stale_lease_is_taken_over_and_its_old_holder_stops(root, caplog):
    cfg = make_config(root, "lease.stale_after_s=1.5")
    base = lease.folder(cfg, "score", "dt=2026-01-20")
    hung = lease._take(base, "score", "dt=2026-01-20", 1.5)  # a holder that stopped renewing
    with pytest.raises(LeaseHeld):
        lease._take(base, "score", "dt=2026-01-20", 1.5)
    time.sleep(2)
    with lease.acquire(cfg, "score", "dt=2026-01-20") as taker:
        assert taker.record["generation"] == 2
        assert taker.record["took_over"]["run_id"] == hung.run_id
        assert objects(cfg, "score") == ["000002.json"]
        assert "stale lease taken over" in caplog.text and hung.run_id in caplog.text
        with pytest.raises(LeaseHeld, match="taken over by"):
            hung.check()
        hung._release()  # the old holder's release leaves the new lease alone
        taker.check()
    assert objects(cfg, "score") == []


TAKER = textwrap.dedent("""
    import sys, time
    from propensity import lease
    from propensity.config import load_config
    from propensity.errors import LeaseHeld
    root, start_at = sys.argv[1], float(sys.argv[2])
    cfg = load_config(overrides=[f"storage.root={root}", "lease.stale_after_s=2"])
    time.sleep(max(0.0, start_at - time.time()))
    try:
        with lease.acquire(cfg, "daily", "dt=2026-01-20") as held:
            print("won", held.record["generation"], flush=True)
            time.sleep(2)
    except LeaseHeld:
        print("refused", flush=True)
""")


def race(root: str, n: int) -> list[str]:
    """`n` processes try to take one lease at the same instant; what each says."""
    start_at = time.time() + 4  # after every interpreter has started
    procs = [
        subprocess.Popen([sys.executable, "-c", TAKER, root, str(start_at)],
                         stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        for _ in range(n)
    ]  # fmt: skip
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return outs


def test_concurrent_takers_exactly_one_wins_fresh_and_over_a_stale_lease(root):
    cfg = make_config(root, "lease.stale_after_s=2")
    outs = race(root, 3)
    assert sorted(outs) == ["refused", "refused", "won 1"]
    base = lease.folder(cfg, "daily", "dt=2026-01-20")
    lease._take(base, "daily", "dt=2026-01-20", 2)  # generation 1, dead from now on
    outs = race(root, 3)  # it is stale by the time they start
    assert sorted(outs) == ["refused", "refused", "won 2"]
    assert objects(cfg, "daily") == []


def test_a_marker_names_the_files_readers_read(root):
    part = storage.partition(storage.join(root, "histories"), "2026-03-01")
    table = pa.table({"profile_id": ["a", "b"], "n": [1, 2]})
    ours = storage.join(part, "part-00000-run-a.parquet")
    storage.write_parquet(table, ours)
    storage.mark_complete(part, [ours])
    # A crashed or concurrent run's file beside it is not the partition's content.
    storage.write_parquet(table, storage.join(part, "part-00000-run-b.parquet"))
    assert storage.parquet_files(part) == [ours]
    assert storage.read_parquet(part).equals(table)
    assert json.loads(storage.read_bytes(storage.join(part, storage.MARKER))) == [
        "part-00000-run-a.parquet"
    ]
    # An empty marker (written before markers named files) still means every file.
    storage.mark_complete(part)
    assert len(storage.parquet_files(part)) == 2
    # A listed file that vanished is an error naming it, never a silently smaller partition.
    storage.mark_complete(part, [ours])
    storage.delete(ours)
    with pytest.raises(storage.StorageError, match="part-00000-run-a.parquet"):
        storage.read_parquet(part)


def test_version_numbers_are_claimed_once(root):
    cfg = make_config(root)
    day = dt.date(2026, 1, 20)
    # Two runs allocating before either publishes (no model.json yet) get two numbers.
    assert [store.next_version(cfg, day) for _ in range(2)] == ["2026-01-20.1", "2026-01-20.2"]
    claim = storage.read_json(storage.join(store.version_uri(cfg, "2026-01-20.1"), store.CLAIM))
    assert claim["pid"] == os.getpid()
    assert store.version_names(cfg) == []  # a claim alone is no version


HOLDER = textwrap.dedent("""
    import sys, time
    from propensity import lease
    from propensity.config import load_config
    cfg = load_config(overrides=[f"storage.root={sys.argv[1]}"])
    with lease.acquire(cfg, "train", "dt=2026-01-20"):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_holder_killed_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    cfg = make_config(tmp_path)  # stale only after 600 s
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with (
        pytest.raises(LeaseHeld, match=f"pid {holder.pid}"),
        lease.acquire(cfg, "train", "dt=2026-01-20"),
    ):
        pass
    holder.kill()
    holder.wait()
    with lease.acquire(cfg, "train", "dt=2026-01-20") as taker:
        assert taker.record["took_over"]["pid"] == holder.pid
        assert "its process is gone from this host" in caplog.text
