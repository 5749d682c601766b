#!/usr/bin/env bash
# The scheduler's entry point: run yesterday's daily cycle (or the day given as $1).
#
#   jobs/run_daily.sh               # cron: yesterday (UTC)
#   jobs/run_daily.sh 2026-01-20    # a given day; re-running a day resumes where it stopped
#
# Environment (all optional):
#   PROPENSITY_HOME    the checkout or install folder (default: this script's repository)
#   PROPENSITY_BIN     the CLI (default: $PROPENSITY_HOME/.venv/bin/propensity, else `propensity`)
#   PROPENSITY_CONFIG  the config file (default: the embedded configs/local.yaml)
#   PROPENSITY_PSEUDONYM_KEY  the hashing key (production: from the secret store, never here)
#   PROPENSITY_LOG_DIR where one log file per run goes (default: $PROPENSITY_HOME/logs)
#
# Exit code = `propensity daily`'s, so the scheduler can alert on it:
#   0   success                                        -> nothing to do
#   10  gate rejected: today's candidate was worse;    -> look at `propensity models list`;
#       predictions were made with the old champion       no action needed for downstream
#   11  drift alert: inputs or scores moved away from  -> open the day's HTML report
#       the model's reference                             (<reports>/dt=D/report.html); see docs/cycle.md
#   12  quality alert: realised AUC dropped            -> retrain (`propensity daily --date D --only train --force`)
#   3   missing input: e.g. the day's raw events have  -> check the tracking export, then re-run this script
#       not arrived                                       with the same date
#   4   bad input: too many malformed records          -> inspect the quarantine partition, re-run
#   1,2 failure / bad config                           -> read the log; re-run the same date once fixed
#   13  another run holds the day's (or a step's) lease -> nothing: that run is doing the work; if it
#       (a double-fired schedule, a retry)                died, re-run after lease.stale_after_s
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROPENSITY_HOME="${PROPENSITY_HOME:-$HERE}"
if [ -z "${PROPENSITY_BIN:-}" ]; then
  if [ -x "$PROPENSITY_HOME/.venv/bin/propensity" ]; then
    PROPENSITY_BIN="$PROPENSITY_HOME/.venv/bin/propensity"
  else
    PROPENSITY_BIN=propensity
  fi
fi
DAY="${1:-$(date -u -d yesterday +%F)}"
LOG_DIR="${PROPENSITY_LOG_DIR:-$PROPENSITY_HOME/logs}"
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/daily-$DAY-$(date -u +%Y%m%dT%H%M%SZ).log"

cd "$PROPENSITY_HOME"
# One run at a time: a slow day must not overlap with the next one.
exec 9>"$LOG_DIR/.daily.lock"
if ! flock -n 9; then
  echo "another daily run holds $LOG_DIR/.daily.lock; not starting" | tee -a "$LOG" >&2
  exit 75
fi

"$PROPENSITY_BIN" daily --date "$DAY" >>"$LOG" 2>&1
code=$?
echo "propensity daily --date $DAY exited $code" >>"$LOG"
# cron mails whatever a job prints: say something only when there is something to act on.
if [ "$code" -ne 0 ]; then
  echo "propensity daily --date $DAY exited $code (log: $LOG)"
  tail -n 30 "$LOG"
fi
exit "$code"
