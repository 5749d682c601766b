"""`propensity daily`: one day of the flow, aggregate -> train -> score -> monitor, resumable.

Each step first looks at what already exists and skips itself when its output is complete:
- aggregate: histories(D) has its marker;
- train:     a complete model version trained for D exists (its gate decision is kept), or the
             schedule does not ask for one today, or labels are not mature (no histories(D-H));
- score:     there is no champion trained on or before D yet, or predictions(D) is complete
             (kept as `propensity score` keeps it, also after a model change, which its
             message names; `--rescore` replaces it atomically);
- monitor:   reports(D) is complete.
So a day that failed half-way is simply run again. `--force` redoes the steps that would run
(the score step as `--rescore`).
A day runs under the lease `daily/dt=D` (each step also takes its stage's own), so two `daily`
of one day never interleave steps: the second refuses (exit 13) before any step.

A run record (JSON) per day goes to `<reports>/runs/<D>-<UTC start>.json`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable

from propensity import lease, storage
from propensity.config import Config
from propensity.cycle import stages
from propensity.errors import ExitCode, PropensityError, exit_code_of
from propensity.ui import console, kv

log = logging.getLogger(__name__)

STEPS = ("aggregate", "train", "score", "monitor")
# A day's code when no step failed: the most serious alert wins.
ALERT_ORDER = (ExitCode.QUALITY_ALERT, ExitCode.DRIFT_ALERT, ExitCode.GATE_REJECTED)


@dataclass
class Step:
    """What one step did: `ran`, `skipped`, `failed` or `not run` (an earlier step failed)."""

    step: str
    outcome: str = "not run"
    seconds: float = 0.0
    detail: str = ""
    exit_code: int = 0


@dataclass
class DayRun:
    day: str
    started_at: str
    steps: list[Step] = field(default_factory=list)
    model_version: str | None = None  # the model that scored the day's predictions
    trained_version: str | None = None  # the candidate trained for the day, if any
    rescore: bool = False  # --rescore: the score step replaces complete predictions
    exit_code: int = 0
    finished_at: str = ""
    record: str = ""  # URI of the run record

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.step == name)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --- the steps: each returns (outcome, detail, exit code) and may fill in the run ------------


def _aggregate(cfg: Config, day: dt.date, force: bool, run: DayRun) -> tuple[str, str, int]:
    histories = cfg.uri("histories")
    if storage.is_complete(storage.partition(histories, day)) and not force:
        return "skipped", "histories complete", 0
    # The first snapshot ever is rebuilt from every raw partition of its window (just events(D)
    # when there are no earlier ones, i.e. a bootstrap); after that a missing D-1 is an error the
    # aggregation reports: a gap must be backfilled, not silently restarted.
    first = not any(d < day for d in storage.list_partitions(histories))
    detail = stages.aggregate(cfg, day, mode="full" if first else "incremental")
    return "ran", ("first snapshot, from the raw window: " if first else "") + detail, 0


def train_reason(cfg: Config, day: dt.date, champion: str | None) -> str | None:
    """Why the schedule trains on `day` (None: it does not)."""
    if champion is None:
        return "no champion yet"
    if not cfg.schedule.train_weekdays or day.weekday() in cfg.schedule.train_weekdays:
        return "scheduled"
    if cfg.schedule.retrain_on_drift and stages.retrain_requested(cfg, day - dt.timedelta(days=1)):
        return f"monitoring of {day - dt.timedelta(days=1)} asked for it"
    return None


def _train(cfg: Config, day: dt.date, force: bool, run: DayRun) -> tuple[str, str, int]:
    label_day = day - dt.timedelta(days=cfg.horizon_days)
    if not storage.is_complete(storage.partition(cfg.uri("histories"), label_day)):
        return "skipped", f"labels not mature: no histories for {label_day} (D-{cfg.horizon_days})", 0
    earlier = stages.versions_trained_for(cfg, day)
    if earlier and not force:
        version, decision = earlier[-1]
        run.trained_version = version
        code = ExitCode.GATE_REJECTED if decision != "approved" else 0
        return "skipped", f"{version} already trained ({decision})", int(code)
    reason = train_reason(cfg, day, stages.champion(cfg))
    if reason is None:
        return "skipped", f"not scheduled (train_weekdays={cfg.schedule.train_weekdays})", 0
    version, decision, detail = stages.train(cfg, day)
    run.trained_version = version
    code = ExitCode.GATE_REJECTED if decision != "approved" else 0
    return "ran", f"{reason}: {version} {decision}; {detail}", int(code)


def _score(cfg: Config, day: dt.date, force: bool, run: DayRun) -> tuple[str, str, int]:
    if stages.champion(cfg) is None:
        return "skipped", "no champion model yet", 0
    choice = stages.champion_as_of(cfg, day)
    if choice.version is None:  # a day before the first model: nothing to score it with
        return "skipped", choice.reason, 0
    # What complete predictions of D mean is `propensity score`'s decision, word for word: kept
    # (a changed model named) unless --rescore (or --force) asks for an atomic replacement.
    run.model_version, detail, scored = stages.score(cfg, day, rescore=force or run.rescore)
    return ("ran" if scored else "skipped"), detail, 0


def _monitor(cfg: Config, day: dt.date, force: bool, run: DayRun) -> tuple[str, str, int]:
    if not storage.is_complete(storage.partition(cfg.uri("predictions"), day)):
        return "skipped", "no predictions for the day", 0
    out = storage.partition(cfg.uri("reports"), day)
    if storage.is_complete(out) and not force:
        code, detail = stages.report_outcome(cfg, day)
        return "skipped", f"report complete; {detail}", code
    code, detail = stages.monitor(cfg, day)
    return "ran", detail, code


STEP_FUNCS: dict[str, Callable] = {
    "aggregate": _aggregate,
    "train": _train,
    "score": _score,
    "monitor": _monitor,
}


def run_day(cfg: Config, day: dt.date, force: bool = False, only: tuple[str, ...] = STEPS,
            rescore: bool = False) -> DayRun:
    """Run the steps of one day in order under the day's lease; stop at the first failure.
    Writes the run record. LeaseHeld (exit 13) when another `daily` of the day holds it."""
    with lease.acquire(cfg, "daily", lease.day_key(day)):
        return _run_day(cfg, day, force, only, rescore)


def _run_day(cfg: Config, day: dt.date, force: bool, only: tuple[str, ...],
             rescore: bool) -> DayRun:
    started = _now()
    run = DayRun(day=day.isoformat(), started_at=started.isoformat(timespec="seconds"),
                 rescore=rescore)
    run.steps = [Step(name) for name in STEPS if name in only]
    failed = False
    for step in run.steps:
        if failed:
            continue
        console.print(f"[bold]{day} {step.step}[/] ...", highlight=False)
        t0 = time.perf_counter()
        try:
            step.outcome, step.detail, step.exit_code = STEP_FUNCS[step.step](cfg, day, force, run)
        except PropensityError as e:
            step.outcome, step.detail, step.exit_code = "failed", str(e), int(exit_code_of(e))
        except Exception as e:  # a bug or an infrastructure error: keep the traceback in the log
            log.error("step %s failed:\n%s", step.step, traceback.format_exc())
            step.outcome, step.detail, step.exit_code = "failed", f"{type(e).__name__}: {e}", 1
        step.seconds = round(time.perf_counter() - t0, 2)
        failed = step.outcome == "failed"
        log.info(kv(event="daily_step", day=day, step=step.step, outcome=step.outcome,
                    seconds=step.seconds, exit_code=step.exit_code))  # fmt: skip
    run.exit_code = day_exit_code(run.steps)
    run.finished_at = _now().isoformat(timespec="seconds")
    run.record = storage.join(
        cfg.uri("reports"), "runs", f"{day.isoformat()}-{started.strftime('%Y%m%dT%H%M%S%fZ')}.json"
    )
    storage.write_json(run.record, asdict(run))
    return run


def day_exit_code(steps: list[Step]) -> int:
    for s in steps:
        if s.outcome == "failed":
            return s.exit_code
    codes = {s.exit_code for s in steps}
    return next((int(c) for c in ALERT_ORDER if c in codes), 0)


def run_range(
    cfg: Config,
    first: dt.date,
    last: dt.date,
    force: bool = False,
    only: tuple[str, ...] = STEPS,
    rescore: bool = False,
) -> int:
    """Run every day from `first` to `last` in order, stopping at the first failed day.

    Returns the exit code: a failed day's code, else the most serious alert of any day."""
    runs: list[DayRun] = []
    day = first
    while day <= last:
        run = run_day(cfg, day, force=force, only=only, rescore=rescore)
        runs.append(run)
        if any(s.outcome == "failed" for s in run.steps):
            break
        day += dt.timedelta(days=1)
    print_summary(runs)
    if runs[-1].exit_code and any(s.outcome == "failed" for s in runs[-1].steps):
        return runs[-1].exit_code
    codes = {r.exit_code for r in runs}
    return next((int(c) for c in ALERT_ORDER if c in codes), 0)


_STYLE = {"ran": "green", "skipped": "dim", "failed": "bold red", "not run": "red"}
_SHORT = {"skipped": "skip", "failed": "FAIL", "not run": "-"}


def _cell(step: Step) -> str:
    """Seconds when the step ran, else skip / FAIL / -; yellow when it raised an alert."""
    alert = step.exit_code and step.outcome != "failed"
    text = f"{step.seconds:.1f}s" if step.outcome == "ran" else _SHORT[step.outcome]
    return f"[{'yellow' if alert else _STYLE[step.outcome]}]{text}[/]"


def print_summary(runs: list[DayRun]) -> None:
    """One table: per day and step what happened; for a single day, with the details."""
    from rich.table import Table

    if len(runs) == 1:
        run = runs[0]
        table = Table(title=f"propensity daily {run.day}: exit {run.exit_code}")
        for col in ("step", "outcome", "seconds"):
            table.add_column(col, no_wrap=True)
        table.add_column("detail", overflow="fold")
        for s in run.steps:
            style = "yellow" if s.exit_code and s.outcome != "failed" else _STYLE[s.outcome]
            table.add_row(s.step, f"[{style}]{s.outcome}[/]", f"{s.seconds:.1f}", s.detail)
        console.print(table)
        console.print(f"model: {run.model_version or '-'}   run record: {run.record}", highlight=False)
        return
    from rich import box

    names = [s.step for s in runs[0].steps]
    table = Table(
        title=f"propensity daily {runs[0].day} .. {runs[-1].day}", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col in ("day", *names, "model", "exit"):
        table.add_column(col, no_wrap=True)
    for run in runs:
        table.add_row(run.day, *(_cell(s) for s in run.steps), run.model_version or "-", str(run.exit_code))
    console.print(table)
    console.print(
        "seconds: the step ran; skip: done before or not due; yellow: an alert "
        "(exit 10 gate rejected, 11 drift, 12 quality)",
        style="dim",
    )
    # The story behind the table: trainings, alerts, realised AUCs and failures, one line each.
    for run in runs:
        for s in run.steps:
            if s.outcome == "failed":
                console.print(f"[bold red]{run.day} {s.step} failed:[/] {s.detail}", highlight=False)
            elif (s.step == "train" and s.outcome == "ran") or s.exit_code or "realised" in s.detail:
                console.print(f"{run.day} {s.step}: {s.detail}", highlight=False)
    console.print(f"run records: {storage.join(runs[0].record.rsplit('/', 1)[0])}/", highlight=False)
