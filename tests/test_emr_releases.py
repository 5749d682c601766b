"""The EMR definitions for both Spark lines: release labels, the Serverless job, the bootstrap."""

from __future__ import annotations

import json
import re
from pathlib import Path

from propensity.cycle import emr

REPO = Path(__file__).resolve().parents[1]


def test_release_labels_are_the_ones_the_scripts_and_docs_name():
    cluster = (REPO / "jobs/emr/cluster.sh").read_text()
    docs = (REPO / "docs/cycle.md").read_text()
    for label in emr.RELEASE_LABELS:
        assert label in cluster and label in docs, label
    default = re.search(r'LABEL="\$\{2:-([^}]+)\}"', cluster).group(1)
    assert default in emr.RELEASE_LABELS


def test_serverless_job_runs_the_same_entry_point():
    job = json.loads((REPO / "jobs/emr/serverless.json").read_text())
    driver = job["jobDriver"]["sparkSubmit"]
    relative = emr.AGGREGATE_JOB.removeprefix(emr.HOME + "/")
    assert driver["entryPoint"] == f"@RELEASE@/{relative}" and (REPO / relative).is_file()
    assert driver["entryPointArguments"] == ["--date", "@DATE@"]
    assert "PROPENSITY_CONFIG=config.yaml" in driver["sparkSubmitParameters"]


def test_bootstrap_installs_the_wheel_without_pyspark():
    pip = [
        line
        for line in (REPO / "jobs/emr/bootstrap.sh").read_text().splitlines()
        if 'pip" install' in line
    ]
    assert len(pip) == 1 and "-c " in pip[0] and "[spark]" not in pip[0] and "pyspark" not in pip[0]
