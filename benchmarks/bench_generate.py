"""Throughput of `propensity generate`, against a naive per-record json.dumps writer.

Run:  .venv/bin/python benchmarks/bench_generate.py [--profiles 470000 --days 30]
      .venv/bin/python benchmarks/bench_generate.py --stats [--profiles 5000 --days 21]

`--stats` prints the statistics of the stream that earlier figures depend on (events per
profile, type mix, order share, truth AUC per target) and how concentrated each profile's
browsing and orders are on its categories: the before/after table of docs/generate.md.

Each format runs in a child process (so peak RSS is that run's own) writing into a temp dir.
The baseline renders a sample of the same simulated events one record at a time (dict,
datetime formatting, json.dumps, gzip level 1): rendering alone, no simulation, so the ratio
is conservative.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gzip
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

START = "2026-01-05"


def child(fmt: str, profiles: int, days: int) -> None:
    from propensity.events.generate import generate_stream

    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        summary = generate_stream(out, START, days, profiles, seed=1, fmt=fmt)
        seconds = time.perf_counter() - t
        size = sum(p.stat().st_size for p in pathlib.Path(out).rglob("*") if p.is_file())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    aucs, shares = list(summary.oracle_auc_7d.values()), list(summary.order_share_7d.values())
    print(
        json.dumps(
            {
                "records": summary.total_records,
                "seconds": seconds,
                "rss_mib": rss,
                "bytes": size,
                "truth_auc": float(np.mean(aucs)) if aucs else None,
                "order_share": float(np.mean(shares)) if shares else None,
            }
        )
    )


def stream_stats(profiles: int, days: int, seed: int) -> dict:
    """Statistics of a seeded JSON-lines run, read back from its files."""
    from propensity.config import TargetConfig
    from propensity.events.generate import generate_stream

    with tempfile.TemporaryDirectory() as out:
        targets = [
            TargetConfig(name="order_7d"),
            TargetConfig(name="sneakers_14d", horizon_days=14, categories=["sneakers"]),
        ]
        summary = generate_stream(out, START, days, profiles, seed=seed, targets=targets)
        rows = []
        for part in sorted(pathlib.Path(out).glob("dt=*/part-*.jsonl.gz")):
            rows.extend(
                json.loads(line) for line in gzip.decompress(part.read_bytes()).splitlines()
            )
    types = collections.Counter(r["event_type"] for r in rows)
    per_profile = collections.Counter(r["profile_id"] for r in rows)
    browsed = collections.defaultdict(collections.Counter)  # profile -> category -> events
    for r in rows:
        if "category" in r and r["event_type"] != "order":
            browsed[r["profile_id"]][r["category"]] += 1
    # Concentration: share of a profile's article events in its top 3 categories (profiles
    # with 20+ such events), and share of orders in the orderer's top 3 browsed categories.
    busy = [c for c in browsed.values() if sum(c.values()) >= 20]
    top3 = np.mean([sum(v for _, v in c.most_common(3)) / sum(c.values()) for c in busy])
    orders = [r for r in rows if r["event_type"] == "order"]
    in_top = np.mean(
        [r["category"] in {k for k, _ in browsed[r["profile_id"]].most_common(3)} for r in orders]
    )
    sneakers = sum(r.get("category") == "sneakers" for r in orders) / max(len(orders), 1)
    stats = {
        "records": len(rows),
        "records_per_profile": len(rows) / len(per_profile),
        "type_share": {t: round(n / len(rows), 4) for t, n in sorted(types.items())},
        "order_share_7d": float(np.mean(list(summary.order_share_7d.values()))),
        "truth_auc_7d": float(np.mean(list(summary.oracle_auc_7d.values()))),
        "observable_auc_7d": float(np.mean(list(summary.observable_auc_7d.values()))),
        "top3_category_share_of_browsing": float(top3),
        "orders_in_top3_browsed_categories": float(in_top),
        "sneakers_share_of_orders": sneakers,
    }
    for name, t in summary.targets.items():
        for key in ("share", "truth_auc", "observable_auc"):
            stats[f"{name}_{key}"] = float(np.nanmean(list(getattr(t, key).values())))
    return stats


def rendering_rates(sample: int) -> tuple[float, float, float]:
    """Events per second turning `sample` simulated events into JSON-lines bytes, ours and
    naive, and of the gzip (level 1) both then need.

    Ours: `Renderer.json_lines` + one join, as `generate` does. Naive: a dict per record,
    datetime formatting, json.dumps, then a join.
    """
    from propensity.config import EventFields
    from propensity.events.catalogue import CATEGORIES
    from propensity.events.generate import CHUNK_PROFILES, GZIP_LEVEL, World, joined_lines
    from propensity.events.render import (
        EVENT_TYPES,
        TS_EPOCH_MS,
        TS_ZONE_MINUTES,
        TS_ZONES,
        Events,
        Renderer,
    )

    world = World(1, 16 * CHUNK_PROFILES, 30)  # enough profiles for the sample on day 0
    cum = world.catalogue.cumulative_weights(0)
    parts, n, c = [], 0, 0
    day = dt.date.fromisoformat(START)
    while n < sample:
        rng = np.random.default_rng([1, 0, c])
        lo = c * CHUNK_PROFILES
        ev, _, _ = world.simulate(rng, 0, day, lo, lo + CHUNK_PROFILES, cum, c)
        parts.append(ev)
        n += len(ev)
        c += 1
    ev = Events.concat(parts).take(np.arange(sample))
    cat = world.catalogue

    renderer = Renderer(cat, world.profile_ids, EventFields())  # built once per run
    t = time.perf_counter()
    text = joined_lines(renderer.json_lines(ev))
    ours = sample / (time.perf_counter() - t)
    t = time.perf_counter()
    gzip.compress(text, compresslevel=GZIP_LEVEL, mtime=0)
    gzip_rate = sample / (time.perf_counter() - t)

    article_ids = cat.article_ids.to_pylist()
    brand_ids = cat.brand_ids.to_pylist()
    profile_ids = world.profile_ids.to_pylist()

    t = time.perf_counter()
    lines = []
    for i in range(sample):
        etype = EVENT_TYPES[ev.etype[i]]
        fmt = int(ev.ts_format[i])
        if fmt == TS_EPOCH_MS:
            ts = int(ev.ts[i])
        else:
            zone = dt.timezone(dt.timedelta(minutes=int(TS_ZONE_MINUTES[fmt])))
            moment = dt.datetime.fromtimestamp(ev.ts[i] / 1000, zone)
            ts = moment.isoformat(timespec="milliseconds").replace("+00:00", TS_ZONES[fmt])
        record = {
            "event_id": f"e{ev.event_id[i]}",
            "profile_id": profile_ids[ev.profile[i]],
            "ts": ts,
            "event_type": etype,
        }
        if etype not in ("search", "page_ping"):
            a = int(ev.article[i])
            record.update(
                article_id=article_ids[a],
                brand=brand_ids[cat.brand[a]],
                category=CATEGORIES[cat.category[a]],
            )
            if etype != "wishlist":
                record["price"] = float(cat.price[a])
        lines.append(json.dumps(record))
    naive_text = ("\n".join(lines) + "\n").encode()
    naive = sample / (time.perf_counter() - t)
    assert len(naive_text) > 0.9 * len(text)  # the same records (naive writes ", " and ": ")
    return ours, naive, gzip_rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", type=int, default=470_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--sample", type=int, default=200_000, help="events for the naive baseline")
    ap.add_argument("--stats", action="store_true", help="stream statistics, default 5000 x 21")
    ap.add_argument("--seed", type=int, default=1, help="of --stats")
    ap.add_argument("--child", choices=["jsonl", "parquet"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stats:
        profiles = 5000 if args.profiles == ap.get_default("profiles") else args.profiles
        days = 21 if args.days == ap.get_default("days") else args.days
        print(f"stats --profiles {profiles} --days {days} --seed {args.seed}")
        print(json.dumps(stream_stats(profiles, days, args.seed), indent=1))
        return
    if args.child:
        child(args.child, args.profiles, args.days)
        return

    print(f"generate --profiles {args.profiles} --days {args.days}", flush=True)
    results = {}
    for fmt in ("jsonl", "parquet"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            fmt,
            "--profiles",
            str(args.profiles),
            "--days",
            str(args.days),
        ]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        results[fmt] = r
        print(
            f"{fmt:8s} {r['records']:>12,} records in {r['seconds']:7.1f} s = "
            f"{r['records'] / r['seconds']:>10,.0f} records/s, peak RSS {r['rss_mib']:,.0f} MiB, "
            f"{r['bytes'] / 2**20:,.0f} MiB written",
            flush=True,
        )
    r = results["jsonl"]
    if r["truth_auc"] is not None:  # needs more than 7 days
        print(
            f"truth    mean AUC of p_order_7d vs realised orders {r['truth_auc']:.3f}, "
            f"7-day order share {r['order_share']:.3f}"
        )
    ours, naive, gzip_rate = rendering_rates(args.sample)
    print(
        f"render   {args.sample:,} events to JSON-lines bytes: vectorised {ours:,.0f} events/s, "
        f"naive per-record json.dumps {naive:,.0f} events/s: {ours / naive:.1f}x; "
        f"gzip level 1 of them {gzip_rate:,.0f} events/s"
    )
    both = 1 / (1 / naive + 1 / gzip_rate)
    print(
        f"naive    {r['records']:,} records would take {r['records'] / both:,.0f} s to render and "
        f"gzip alone (no simulation); generate jsonl took {r['seconds']:,.0f} s for everything: "
        f"{r['records'] / both / r['seconds']:.1f}x faster"
    )


if __name__ == "__main__":
    main()
