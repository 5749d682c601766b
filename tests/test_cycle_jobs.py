"""jobs/: the cron example and the scheduler's shell entry point."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs/run_daily.sh"


def run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "PROPENSITY_HOME": str(REPO),
        "PROPENSITY_LOG_DIR": str(tmp_path / "logs"),
        "PROPENSITY__STORAGE__ROOT": str(tmp_path / "data"),
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=environment, capture_output=True, text=True, timeout=120
    )


def test_cron_runs_the_entry_point_daily():
    lines = [
        line for line in (REPO / "jobs/cron/propensity.cron").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]  # fmt: skip
    (entry,) = lines
    minute, hour, dom, month, dow, command = entry.split(maxsplit=5)
    assert (dom, month, dow) == ("*", "*", "*") and minute.isdigit() and hour.isdigit()
    assert command.endswith("jobs/run_daily.sh")
    assert os.access(SCRIPT, os.X_OK)


def test_entry_point_passes_the_exit_code_and_keeps_a_log(tmp_path):
    result = run_script(tmp_path, "2026-02-30")  # not a date: `propensity daily` exits 2
    assert result.returncode == 2
    assert "propensity daily --date 2026-02-30 exited 2" in result.stdout
    (log,) = (tmp_path / "logs").glob("daily-2026-02-30-*.log")
    assert "--date" in log.read_text() and "exited 2" in log.read_text()


def test_entry_point_defaults_to_yesterday_and_documents_every_exit_code(tmp_path):
    text = SCRIPT.read_text()
    assert 'date -u -d yesterday +%F' in text
    from propensity.errors import ExitCode

    for code in ExitCode:
        if code != ExitCode.OK:
            assert re.search(rf"^#\s+(\d+,)?{int(code)}\b", text, re.M), f"exit {int(code)} undocumented"


def test_one_run_at_a_time(tmp_path):
    (tmp_path / "logs").mkdir()
    holder = subprocess.Popen(["flock", str(tmp_path / "logs/.daily.lock"), "sleep", "30"])
    try:
        for _ in range(50):  # wait until the holder has the lock
            if subprocess.run(["flock", "-n", str(tmp_path / "logs/.daily.lock"), "true"]).returncode:
                break
            subprocess.run(["sleep", "0.1"])
        result = run_script(tmp_path, "2026-01-05")
        assert result.returncode == 75 and "another daily run" in result.stderr
    finally:
        holder.kill()
        holder.wait()
