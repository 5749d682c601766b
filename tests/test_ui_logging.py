"""Log lines off a terminal: logfmt with an ISO-8601 `ts` that holds no space."""

from __future__ import annotations

import datetime as dt
import logging
import re

import pytest

from propensity.ui import kv, setup_logging


@pytest.fixture
def root_handlers():
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    root.handlers[:] = saved
    root.setLevel(level)


def test_log_lines_are_logfmt_with_an_iso_timestamp(capsys, root_handlers):
    setup_logging()  # stderr is captured here, not a terminal: the key=value formatter
    before = dt.datetime.now(dt.UTC)
    logging.getLogger("propensity.test").info("scored %s", kv(date="2026-01-20", rows=700))
    after = dt.datetime.now(dt.UTC)
    line = capsys.readouterr().err.strip().splitlines()[-1]

    m = re.fullmatch(r"ts=(\S+) level=INFO logger=propensity\.test scored date=2026-01-20 rows=700",
                     line)
    assert m, line
    ts = m.group(1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts), ts
    when = dt.datetime.fromisoformat(ts)
    assert when.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= when <= after + dt.timedelta(seconds=1)
    pairs = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
    assert pairs["ts"] == ts and pairs["level"] == "INFO" and pairs["rows"] == "700"
