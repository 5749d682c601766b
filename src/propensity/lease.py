"""One writer at a time: a lease per (stage, partition), taken before a run touches its output.

Layout (any storage root, local or S3):

    <storage.root>/_leases/<stage>/<key>/<generation>.json   e.g. _leases/train/dt=2026-01-20/000001.json

The live lease of a key is its highest generation. Taking a lease is one atomic create
(`storage.create_exclusive`: a hard link locally, a conditional PUT `If-None-Match: *` on S3) of
generation 1, or of generation n+1 over a stale generation n, so of two runs that try at once
exactly one wins, also when both take over the same stale lease. The record names the holder
(host, pid, start time, command line, run id); its heartbeat is the object's modification time,
renewed by a daemon thread every `lease.stale_after_s / 4`. A lease not renewed for
`lease.stale_after_s` (its holder was killed or hangs) is taken over by the next run, which logs
the old holder; so is, at once, a lease whose holder ran on this very host (same host name and
boot id) in a process that no longer exists, so that a run killed on a cron host does not block
the next one for `stale_after_s`. A holder checks its lease (`Lease.check`) before it publishes anything: a run
whose lease was taken over, or that could not renew it in time, stops with `LeaseHeld` (exit 13)
instead of mixing its output with the new holder's. Release deletes the run's lease object.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from propensity import storage
from propensity.config import Config
from propensity.errors import LeaseHeld
from propensity.ui import kv

log = logging.getLogger(__name__)

LEASES = "_leases"
_ATTEMPTS = 5  # rounds of (look, create) before giving up under heavy contention


def folder(cfg: Config, stage: str, key: str) -> str:
    """URI of the leases of one (stage, key), e.g. `<root>/_leases/aggregate/dt=2026-01-20`."""
    return storage.join(cfg.storage.root, LEASES, stage, key)


def day_key(day: dt.date | str) -> str:
    return f"dt={storage.as_date(day).isoformat()}"


def _gen_uri(base: str, gen: int) -> str:
    return storage.join(base, f"{gen:06d}.json")


def _generations(base: str) -> list[int]:
    gens = []
    for uri in storage.list_files(base, suffix=".json"):
        stem = uri.rsplit("/", 1)[-1].removesuffix(".json")
        if stem.isdigit():
            gens.append(int(stem))
    return sorted(gens)


def _read(uri: str) -> tuple[dict, float] | None:
    """(record, heartbeat epoch seconds) of a lease object, or None when it is gone."""
    heartbeat = storage.modified_at(uri)
    if heartbeat is None:
        return None
    try:
        record = json.loads(storage.read_bytes(uri))
    except storage.StorageError:
        return None if not storage.exists(uri) else ({}, heartbeat)
    except json.JSONDecodeError:
        record = {}  # hand-edited or foreign: still a lease, its holder unknown
    return (record if isinstance(record, dict) else {}), heartbeat


def _boot_id() -> str | None:
    """This kernel's boot id (Linux), which tells this host from another of the same name."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _gone_here(record: dict) -> bool:
    """Whether the holder ran on this host (name and boot) in a process that no longer exists.
    Anything unsure (another host, no boot id, a pid that is alive or not ours) says no."""
    pid, boot = record.get("pid"), _boot_id()
    if not (boot and record.get("boot_id") == boot and record.get("host") == socket.gethostname()):
        return False
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # e.g. another user's live process
    return False


def describe(record: dict) -> str:
    """The holder in words, for messages and logs."""
    if not record:
        return "an unknown holder (the lease record cannot be read)"
    return (
        f"host {record.get('host')}, pid {record.get('pid')}, started {record.get('started_at')}, "
        f"command `{record.get('command')}` (run {record.get('run_id')})"
    )


def _held_message(stage: str, key: str, uri: str, record: dict, age: float, stale: float) -> str:
    left = max(0.0, stale - age)
    return (
        f"{stage} {key} is being written by another run: {describe(record)}. Its lease {uri} "
        f"was renewed {age:.0f} s ago and counts as stale after {stale:.0f} s without renewal "
        f"(lease.stale_after_s), in about {left:.0f} s. Nothing was written. Wait for that run "
        f"to finish; if it is dead, run again after {left:.0f} s (the lease is then taken "
        f"over), or delete {uri} first"
    )


@dataclass
class Lease:
    """A held lease; `check()` before publishing."""

    stage: str
    key: str
    uri: str
    record: dict
    stale_after_s: float
    lost: str | None = None  # why the lease is no longer ours, once the renewer found out
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    def problem(self) -> str | None:
        """Why this run no longer holds its lease (taken over, deleted, expired), else None."""
        base = self.uri.rsplit("/", 1)[0]
        mine = int(self.record["generation"])
        newer = [g for g in _generations(base) if g > mine]
        if newer:
            held = _read(_gen_uri(base, newer[-1]))
            who = describe(held[0]) if held else "another run"
            return f"taken over by {who}"
        held = _read(self.uri)
        if held is None or held[0].get("run_id") != self.run_id:
            return "its lease object was deleted or replaced"
        age = time.time() - held[1]
        if age > self.stale_after_s:
            return f"not renewed for {age:.0f} s (> lease.stale_after_s={self.stale_after_s:g})"
        return None

    def check(self) -> None:
        """Raise LeaseHeld unless this run still holds its lease: call it before publishing."""
        why = self.lost or self.problem()
        if why:
            self.lost = why
            raise LeaseHeld(
                f"{self.stage} {self.key}: this run's lease {self.uri} was lost ({why}); it "
                "stopped before publishing its output. Run it again once the other run is done"
            )

    def _renew(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                why = self.problem() or (None if storage.touch(self.uri) else "lease deleted")
            except storage.StorageError as e:  # transient: the next round tries again
                log.warning("lease renewal failed %s", kv(lease=self.uri, error=e))
                continue
            if why:
                self.lost = why
                log.error("lease lost %s", kv(lease=self.uri, reason=why))
                return

    def _release(self) -> None:
        held = _read(self.uri)
        if held and held[0].get("run_id") == self.run_id:
            storage.delete(self.uri)


def _holder(stage: str, key: str, gen: int, stale: float, previous: dict | None) -> dict:
    return {
        "stage": stage,
        "key": key,
        "generation": gen,
        "run_id": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid": os.getpid(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)),
        "stale_after_s": stale,
        "took_over": previous,
    }


def _take(base: str, stage: str, key: str, stale: float) -> Lease:
    """Create this run's lease object: generation 1, or n+1 over a stale generation n."""
    for _ in range(_ATTEMPTS):
        gens = _generations(base)
        previous = None
        if gens:
            top = _gen_uri(base, gens[-1])
            held = _read(top)
            if held is None:
                continue  # released meanwhile: look again
            record, heartbeat = held
            age = time.time() - heartbeat
            gone = _gone_here(record)
            if age <= stale and not gone:
                raise LeaseHeld(_held_message(stage, key, top, record, age, stale))
            why = "its process is gone from this host" if gone else f"not renewed for {age:.0f} s"
            older = {k: v for k, v in record.items() if k != "took_over"}  # no growing chain
            previous = {**older, "uri": top, "heartbeat_age_s": round(age, 1), "why": why}
        gen = gens[-1] + 1 if gens else 1
        record = _holder(stage, key, gen, stale, previous)
        uri = _gen_uri(base, gen)
        body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        if storage.create_exclusive(uri, body):
            if previous:
                log.warning(
                    "stale lease taken over %s",
                    kv(lease=uri, why=previous["why"], old_holder=describe(previous)),
                )  # fmt: skip
                for g in gens:  # the older generations are dead: tidy them away
                    storage.delete(_gen_uri(base, g))
            return Lease(stage, key, uri, record, stale)
        # Another run created that generation first: the next round names it.
    raise LeaseHeld(
        f"{stage} {key}: could not take the lease under {base} after {_ATTEMPTS} "
        "tries: other runs keep taking it; run again later"
    )


@contextmanager
def acquire(cfg: Config, stage: str, key: str) -> Iterator[Lease]:
    """Hold the lease of (stage, key) for the block, renewing it; LeaseHeld (exit 13) at once
    when a live run holds it. Released (deleted) when the block ends, normally or by an error."""
    stale = cfg.lease.stale_after_s
    lease = _take(folder(cfg, stage, key), stage, key, stale)
    log.info("lease taken %s", kv(lease=lease.uri, run=lease.run_id))
    renewer = threading.Thread(
        target=lease._renew, args=(cfg.lease.renew_every_s,), name=f"lease-{stage}", daemon=True
    )
    renewer.start()
    try:
        yield lease
    finally:
        lease._stop.set()
        renewer.join()
        lease._release()
