"""`propensity emr submit` against moto's EMR (server mode, the same loopback endpoint as S3)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from propensity import storage
from propensity.cli import app
from propensity.cycle import emr

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def cluster(s3_endpoint, monkeypatch):
    """A running cluster on the fake EMR; boto3 clients find it through AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    client = boto3.client("emr")
    cid = client.run_job_flow(
        Name="propensity-test",
        ReleaseLabel="emr-7.5.0",
        Instances={
            "MasterInstanceType": "g5.xlarge",
            "SlaveInstanceType": "m5.xlarge",
            "InstanceCount": 3,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]
    return client, cid


def _set_state(cluster_id: str, states: dict[str, str]) -> None:
    """Move steps of the fake cluster along, as EMR would (moto leaves them pending)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emr.models import emr_backends

    for step in emr_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].clusters[cluster_id].steps:
        if step.id in states:
            step.state = states[step.id]


def test_steps_in_order_with_the_day_and_failure_actions():
    steps = emr.build_steps("2026-01-20")
    assert [s["Name"] for s in steps] == [
        f"propensity {n} 2026-01-20" for n in ("aggregate", "train", "score", "monitor")
    ]
    agg, train, score, monitor = (s["HadoopJarStep"]["Args"] for s in steps)
    assert agg[:2] == [emr.WRAPPER, "spark-submit"] and emr.AGGREGATE_JOB in agg
    assert agg[agg.index("--date") + 1] == "2026-01-20"
    assert train == [emr.WRAPPER, "propensity", "daily", "--date", "2026-01-20", "--only", "train"]
    assert score[-2:] == ["--only", "score"] and monitor[-2:] == ["--only", "monitor"]
    # a rejected candidate must not stop scoring; a failed aggregation must stop the day
    assert [s["ActionOnFailure"] for s in steps] == [
        "CANCEL_AND_WAIT", "CONTINUE", "CANCEL_AND_WAIT", "CONTINUE"
    ]  # fmt: skip


def test_gpu_image_and_force():
    steps = emr.build_steps("2026-01-20", train_image="acct.dkr.ecr/propensity-gpu:0.1.0", force=True)
    train = steps[1]["HadoopJarStep"]["Args"]
    assert train[1:3] == ["docker", "run"] and "--gpus" in train
    assert train[train.index("acct.dkr.ecr/propensity-gpu:0.1.0") + 1 :] == [
        "daily", "--date", "2026-01-20", "--only", "train", "--force"
    ]  # fmt: skip


def test_steps_refer_to_job_files_that_exist():
    """The spark-submit step runs files bootstrap.sh installs from jobs/ under /opt/propensity."""
    assert (REPO / emr.AGGREGATE_JOB.removeprefix(emr.HOME + "/")).is_file()
    assert f"/usr/local/bin/{emr.WRAPPER}" in (REPO / "jobs/emr/bootstrap.sh").read_text()


def test_steps_json_file_matches_the_submitter():
    """jobs/emr/steps.json (for `aws emr add-steps`) is what `emr submit` adds, date left open."""
    on_disk = json.loads((REPO / "jobs/emr/steps.json").read_text())
    assert on_disk == emr.build_steps("@DATE@")


def test_submit_adds_the_steps_and_returns(cluster):
    client, cid = cluster
    result = runner.invoke(app, ["emr", "submit", "--cluster-id", cid, "--date", "2026-01-20"])
    assert result.exit_code == 0, result.output
    ids = [line.split("\t")[0] for line in result.stdout.strip().splitlines()]
    listed = client.list_steps(ClusterId=cid)["Steps"]
    assert sorted(s["Id"] for s in listed) == sorted(ids)
    added = {s["Id"]: s for s in listed}
    assert [added[i]["Name"] for i in ids] == [s["Name"] for s in emr.build_steps("2026-01-20")]
    assert added[ids[2]]["Config"]["Args"][-2:] == ["--only", "score"]


def test_wait_reports_completed_and_failed_steps(cluster):
    client, cid = cluster
    ids = emr.submit(client, cid, emr.build_steps("2026-01-20"))
    _set_state(cid, {ids[0]: "COMPLETED", ids[1]: "FAILED", ids[2]: "COMPLETED", ids[3]: "COMPLETED"})
    final = emr.wait(client, cid, ids, poll_seconds=0.05, timeout_s=5)
    assert [s.state for s in final] == ["COMPLETED", "FAILED", "COMPLETED", "COMPLETED"]

    _set_state(cid, {i: "RUNNING" for i in ids})
    with pytest.raises(Exception, match="still running"):
        emr.wait(client, cid, ids, poll_seconds=0.05, timeout_s=0.2)


def test_cli_wait_exits_with_the_outcome(cluster, tmp_path):
    client, cid = cluster

    def finish_later(state_of_train: str, already: int):
        # EMR runs the steps while the CLI polls: move them along from beside it.
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.emr.models import emr_backends

        steps = emr_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].clusters[cid].steps
        deadline = time.monotonic() + 20
        while len(steps) < already + 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        ids = [s.id for s in steps[already:]]
        _set_state(cid, {i: "COMPLETED" for i in ids} | {ids[1]: state_of_train})

    args = ["emr", "submit", "--cluster-id", cid, "--date", "2026-01-21", "--wait",
            "--set", "schedule.emr.poll_seconds=0.1", "--set", f"storage.root={tmp_path}"]  # fmt: skip
    record = {  # what `propensity daily --only train` on the cluster writes when the gate rejects
        "day": "2026-01-21",
        "record": f"{tmp_path}/reports/runs/2026-01-21-20260122T031500000000Z.json",
        "exit_code": 10,
        "steps": [{"step": "train", "outcome": "ran", "exit_code": 10, "seconds": 1.0, "detail": ""}],
    }
    for train_state, code, with_record in (("COMPLETED", 0, False), ("FAILED", 1, False), ("FAILED", 10, True)):
        if with_record:
            storage.write_json(record["record"], record)
        already = len(client.list_steps(ClusterId=cid)["Steps"])
        helper = threading.Thread(target=finish_later, args=(train_state, already))
        helper.start()
        result = runner.invoke(app, args)
        helper.join()
        assert result.exit_code == code, result.output
        if code:
            assert "propensity train 2026-01-21 FAILED" in result.output


def test_unknown_or_terminated_cluster_is_a_clear_error(cluster):
    client, cid = cluster
    result = runner.invoke(app, ["emr", "submit", "--cluster-id", "j-NOSUCHCLUSTER", "--date", "2026-01-20"])
    assert result.exit_code == 3 and "j-NOSUCHCLUSTER" in result.output
    client.terminate_job_flows(JobFlowIds=[cid])
    result = runner.invoke(app, ["emr", "submit", "--cluster-id", cid, "--date", "2026-01-20"])
    assert result.exit_code == 2 and "TERMINATED" in result.output


def test_dry_run_prints_steps_without_aws():
    result = runner.invoke(app, ["emr", "submit", "--cluster-id", "j-X", "--date", "2026-01-20", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == emr.build_steps("2026-01-20")


def test_bad_date_is_a_usage_error():
    result = runner.invoke(app, ["emr", "submit", "--cluster-id", "j-X", "--date", "20-01-2026", "--dry-run"])
    assert result.exit_code == 2 and "--date" in result.output


def _submit():
    return runner.invoke(app, ["emr", "submit", "--cluster-id", "j-ABC", "--date", "2026-01-20"])


def _one_clean_line(result) -> str:
    """The error as the operator sees it: one line, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def no_aws_setup(tmp_path, monkeypatch):
    """No AWS settings at all, as on a fresh laptop: no region, no credentials, no profile files,
    and no instance metadata service to ask."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_EMR", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3 keeps what it read at first use
    yield monkeypatch
    boto3.DEFAULT_SESSION = None  # and none of this for later tests


def test_no_region_is_one_line_naming_aws_region(no_aws_setup):
    result = _submit()
    assert result.exit_code == 2
    line = _one_clean_line(result)
    assert "no AWS region" in line and "AWS_DEFAULT_REGION" in line


def test_no_credentials_is_one_line_naming_the_settings(no_aws_setup):
    no_aws_setup.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    result = _submit()
    assert result.exit_code == 2
    line = _one_clean_line(result)
    assert "Unable to locate credentials" in line
    assert "AWS_PROFILE" in line and "AWS_ACCESS_KEY_ID" in line


def test_a_missing_profile_is_one_line_naming_aws_profile(no_aws_setup):
    no_aws_setup.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    no_aws_setup.setenv("AWS_PROFILE", "nobody")
    result = _submit()
    assert result.exit_code == 2
    line = _one_clean_line(result)
    assert "nobody" in line and "check AWS_PROFILE" in line


def test_an_unreachable_endpoint_is_one_line_naming_it(monkeypatch):
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # botocore's retries, kept short for the test
    result = _submit()
    assert result.exit_code == 1
    line = _one_clean_line(result)
    assert f"http://127.0.0.1:{port}" in line and "AWS_ENDPOINT_URL" in line


@pytest.mark.parametrize("code, exit_code, says", [
    ("UnrecognizedClientException", 2, "AWS refused the credentials"),
    ("ThrottlingException", 1, "ThrottlingException: slow down"),
])
def test_refused_requests_are_one_line(code, exit_code, says):
    from botocore.exceptions import ClientError

    from propensity.errors import exit_code_of

    with pytest.raises(Exception) as err, emr.aws_errors("EMR cluster j-ABC"):
        raise ClientError({"Error": {"Code": code, "Message": "slow down"}}, "DescribeCluster")
    assert int(exit_code_of(err.value)) == exit_code
    assert str(err.value).startswith("EMR cluster j-ABC: ") and says in str(err.value)
    assert "\n" not in str(err.value)
