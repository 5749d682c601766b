"""Terminal output shared by every stage: one stderr console, progress bars, structured logs.

Logs never carry raw profile ids: stages log counts and pseudonymised ids only.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys

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


class _LogfmtFormatter(logging.Formatter):
    """`ts=` as ISO-8601 in UTC with milliseconds and no space (`2026-01-20T06:00:00.123Z`), so
    logfmt parsers and collectors read each line as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def setup_logging(verbose: bool = False) -> None:
    """Human-readable logs on a terminal, one key=value line per record otherwise."""
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.handlers.clear()
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(console=console, show_path=False)
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
