"""The package without its `spark` extra (the GPU trainer image, local-engine scoring workers,
EMR nodes before spark-submit puts the cluster's pyspark on the path): everything but the Spark
jobs imports and the CLI answers."""

from __future__ import annotations

import subprocess
import sys

# pyspark made unimportable, as where it is not installed.
SCRIPT = """
import sys
sys.modules["pyspark"] = None
import propensity.cli, propensity.cycle.daily, propensity.cycle.emr, propensity.scoring.run
import propensity.training, propensity.monitoring, propensity.histories.commands
from propensity.cli import app
try:
    app(["--help"], prog_name="propensity")
except SystemExit as e:
    sys.exit(e.code)
"""


def test_cli_and_non_spark_stages_import_without_pyspark():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "aggregate" in done.stdout and "score" in done.stdout
