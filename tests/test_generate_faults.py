"""Planted faults in the generator: nothing changes before the fault's day; from it on, the
fault is there (records of a type gone, prices x100, a field renamed, fewer orders)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from propensity.cli import app
from propensity.events.generate import Fault, generate_stream

START = dt.date(2026, 1, 1)
FAULT_DAY = dt.date(2026, 1, 4)
DAYS, PROFILES = 5, 600


def _parts(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.glob("dt=*/part-*"))}


def _records(root: Path, day: dt.date) -> list[dict]:
    return [json.loads(line) for p in sorted((root / f"dt={day}").glob("part-*"))
            for line in gzip.decompress(p.read_bytes()).decode().splitlines()]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    generate_stream(str(root), START, DAYS, PROFILES, seed=2)
    return root


@pytest.mark.parametrize("text", ["outage:add_to_cart", "cents", "rename:price", "order_rate:0.2"])
def test_a_fault_changes_nothing_before_its_day(clean, tmp_path, text):
    fault = Fault.parse(f"{text}@{FAULT_DAY}")
    generate_stream(str(tmp_path), START, DAYS, PROFILES, seed=2, faults=[fault])
    before, after = _parts(clean), _parts(tmp_path)
    assert before.keys() == after.keys()
    for name, digest in before.items():
        day = dt.date.fromisoformat(name[3:13])
        if day < FAULT_DAY:
            assert after[name] == digest, name
    assert any(after[n] != d for n, d in before.items() if n[3:13] == str(FAULT_DAY))

    old, new = _records(clean, FAULT_DAY), _records(tmp_path, FAULT_DAY)
    types_old = Counter(r["event_type"] for r in old)
    types_new = Counter(r["event_type"] for r in new)
    if fault.kind == "outage":
        assert types_old["add_to_cart"] > 0 and types_new["add_to_cart"] == 0
        assert types_new["view"] == types_old["view"]
    elif fault.kind == "cents":
        prices = {(r["article_id"], r["price"]) for r in old if "price" in r}
        cents = {(r["article_id"], r["price"]) for r in new if "price" in r}
        assert {(a, round(p * 100, 2)) for a, p in prices} == cents
    elif fault.kind == "rename":
        assert not any("price" in r for r in new) and any("price_v2" in r for r in new)
    else:
        assert types_new["order"] < types_old["order"]
    meta = json.loads((tmp_path / "_truth" / "generator.json").read_text())
    assert meta["faults"] == [fault.describe()]


def test_fault_option_is_parsed_and_checked(tmp_path):
    assert Fault.parse("outage@2026-01-04") == Fault("outage", FAULT_DAY, "add_to_cart")
    assert Fault.parse("order_rate:3@2026-01-04").arg == "3"
    for bad in ("outage", "leak@2026-01-04", "outage:nope@2026-01-04", "cents:-1@2026-01-04",
                "rename:profile_id@2026-01-04", "cents@2026-13-01"):
        with pytest.raises(ValueError, match="--fault"):
            Fault.parse(bad)
    runner = CliRunner()
    args = ["generate", "--out", str(tmp_path / "ev"), "--start", "2026-01-01", "--days", "2",
            "--profiles", "50", "--set", f"storage.root={tmp_path}"]
    result = runner.invoke(app, [*args, "--fault", "leak@2026-01-02"])
    assert result.exit_code == 2 and "--fault" in result.output
    result = runner.invoke(app, [*args, "--fault", "outage:order@2026-01-02"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "ev" / "_truth" / "generator.json").read_text())
    assert meta["faults"] == [{"kind": "outage", "day": "2026-01-02", "arg": "order"}]
