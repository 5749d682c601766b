"""Log lines off a terminal: logfmt with an ISO-8601 `ts` that holds no space, or JSON."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

from typer.testing import CliRunner

from propensity.cli import app
from propensity.ui import kv, setup_logging



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


def test_json_log_lines_parse_and_carry_ts_level_logger_message(capsys, root_handlers):
    setup_logging(log_format="json")
    log = logging.getLogger("propensity.test")
    log.info("scored %s", kv(date="2026-01-20", rows=700))
    log.debug("not shown at INFO")
    try:
        raise ValueError('a "quoted"\nmulti-line failure')
    except ValueError:
        log.exception("step failed")
    lines = capsys.readouterr().err.strip().splitlines()

    assert len(lines) == 2, lines  # the traceback stays inside its record's line
    records = [json.loads(line) for line in lines]
    for r in records:
        assert dt.datetime.fromisoformat(r["ts"]).utcoffset() == dt.timedelta(0)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]), r["ts"]
        assert r["logger"] == "propensity.test"
    assert records[0]["level"] == "INFO" and records[0]["message"] == "scored date=2026-01-20 rows=700"
    assert records[1]["level"] == "ERROR" and records[1]["message"] == "step failed"
    assert 'ValueError: a "quoted"\nmulti-line failure' in records[1]["exc"]


def test_cli_log_format_option_and_variable(tmp_path, root_handlers):
    runner = CliRunner()
    store = ["--set", f"storage.root={tmp_path}"]
    result = runner.invoke(app, ["--log-format", "json", "-v", "models", "list", *store])
    assert result.exit_code == 0, result.output
    handler = logging.getLogger().handlers[0]
    assert json.loads(handler.format(logging.makeLogRecord({"msg": "x", "levelname": "INFO"})))
    result = runner.invoke(app, ["models", "list", *store], env={"PROPENSITY_LOG_FORMAT": "xml"})
    assert result.exit_code == 2 and "'xml' is not one of" in result.output
