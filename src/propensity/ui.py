"""Terminal output shared by every stage: one stderr console, progress bars, structured logs,
heartbeats for long work.

Logs never carry raw profile ids: stages log counts and pseudonymised ids only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)

LOG_FORMATS = ("logfmt", "json")


def _iso_utc(record: logging.LogRecord) -> str:
    """ISO-8601 in UTC with milliseconds and no space: `2026-01-20T06:00:00.123Z`."""
    when = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _LogfmtFormatter(logging.Formatter):
    """`ts=` holds no space, so logfmt parsers and collectors read each line as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _iso_utc(record)


class _JsonFormatter(logging.Formatter):
    """One JSON object a line (ts, level, logger, message; exc when there is a traceback), for
    collectors that parse JSON rather than logfmt."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": _iso_utc(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(verbose: bool = False, log_format: str = "logfmt") -> None:
    """logfmt: human-readable logs on a terminal, one key=value line per record otherwise;
    json: one JSON object per record, on a terminal too."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.handlers.clear()
    if log_format == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonFormatter())
    elif sys.stderr.isatty():
        handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LogfmtFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "pyspark", "botocore", "urllib3", "lightning", "pytorch_lightning"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def kv(**fields) -> str:
    """Format fields as `key=value` pairs for a structured log line."""
    return " ".join(f"{k}={v}" for k, v in fields.items())


def progress() -> Progress:
    """A progress bar for long work; quiet (no live redraw) when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def heartbeat(
    what: str, poll: Callable[[], dict | None], every_s: float, logger: logging.Logger
) -> threading.Event:
    """From a daemon thread, log `what` with the fields `poll()` returns at most every `every_s`
    seconds, while there is work (None: idle), so long work without a progress bar of its own
    still shows it is alive. `poll` is asked every second (or `every_s`, if shorter), so short
    bursts of work between two lines count too; the line carries the latest busy answer. Ends
    when the returned event is set or `poll` raises (its source is gone)."""
    stop = threading.Event()

    def beat() -> None:
        last_line, busy = time.monotonic(), None
        while not stop.wait(min(1.0, every_s)):
            try:
                busy = poll() or busy
            except Exception:  # noqa: BLE001 - the source of progress has gone away
                return
            if busy is not None and time.monotonic() - last_line >= every_s:
                logger.info("%s %s", what, kv(**busy))
                last_line, busy = time.monotonic(), None

    threading.Thread(target=beat, name=f"heartbeat: {what}", daemon=True).start()
    return stop
