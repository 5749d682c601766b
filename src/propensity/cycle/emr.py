"""The daily cycle as AWS EMR steps: build the step definitions, add them, wait for them.

The cluster is prepared by `jobs/emr/bootstrap.sh` (a bootstrap action): it installs the package
and the job scripts under `/opt/propensity`, the config at `/etc/propensity/config.yaml`, and the
`propensity-step` wrapper that every step runs through (it sets `PROPENSITY_CONFIG` and fetches
the pseudonymisation key from Secrets Manager). The steps therefore only name commands:

1. aggregate: `spark-submit` of the aggregation job on YARN (EMR's Spark, the installed package);
2. train:     `propensity daily --only train` (the schedule decides), on the primary node or in
              the GPU image; it may exit 10 (gate rejected), so later steps run anyway;
3. score:     `propensity daily --only score` with the champion;
4. monitor:   `propensity daily --only monitor` (exits 11/12 on drift or quality alerts).

`jobs/emr/steps.json` is the same list for `aws emr add-steps` (date placeholder `@DATE@`).
The steps are the same on EMR 7.x (Spark 3.5) and `emr-spark-8.0.0` (Spark 4.0): the venv holds
no pyspark, so the aggregation runs on the cluster's own Spark (`jobs/emr/cluster.sh`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from propensity import storage
from propensity.config import Config
from propensity.cycle.daily import ALERT_ORDER
from propensity.errors import MissingInput, PropensityError, UsageError
from propensity.ui import kv

log = logging.getLogger(__name__)

HOME = "/opt/propensity"  # where bootstrap.sh installs the release on every node
# Release labels the steps are written for (jobs/emr/cluster.sh, docs/cycle.md "EMR").
RELEASE_LABELS = {"emr-7.13.0": "Spark 3.5.6", "emr-spark-8.0.0": "Spark 4.0.2"}
AGGREGATE_JOB = f"{HOME}/jobs/emr/aggregate_job.py"  # the aggregation's spark-submit entry point
WRAPPER = "propensity-step"  # installed by bootstrap.sh on every node
TERMINAL = {"COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"}
# ClientError codes that mean the credentials are wrong or lack a permission, not the request.
AUTH_ERRORS = {
    "AccessDenied", "AccessDeniedException", "ExpiredToken", "ExpiredTokenException",
    "InvalidClientTokenId", "InvalidSignatureException", "SignatureDoesNotMatch",
    "UnrecognizedClientException",
}  # fmt: skip
CREDENTIALS_HINT = (
    "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance "
    "profile or role provides them"
)


@contextmanager
def aws_errors(what: str, other: type[PropensityError] = PropensityError) -> Iterator[None]:
    """botocore's failures as one-line errors that name the setting to check, so `propensity
    emr` prints no traceback: no region or no credentials exit 2, an unreachable endpoint 1, a
    refused request 2 (credentials) or `other`'s code."""
    from botocore import exceptions as aws

    try:
        yield
    except aws.NoRegionError:
        raise UsageError(
            f"{what}: no AWS region: set AWS_DEFAULT_REGION (or the region of the "
            "AWS_PROFILE in ~/.aws/config)"
        ) from None
    except (aws.NoCredentialsError, aws.PartialCredentialsError) as e:
        raise UsageError(f"{what}: {e}: {CREDENTIALS_HINT}") from None
    except aws.ProfileNotFound as e:
        raise UsageError(f"{what}: {e}: check AWS_PROFILE") from None
    except (aws.EndpointConnectionError, aws.ReadTimeoutError) as e:
        raise PropensityError(
            f"{what}: cannot reach the EMR endpoint {e.kwargs.get('endpoint_url')}: check the "
            "network, AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_EMR (unset for "
            "AWS itself)"
        ) from None
    except aws.ClientError as e:
        code, message = e.response["Error"].get("Code"), e.response["Error"].get("Message")
        if code in AUTH_ERRORS:
            raise UsageError(
                f"{what}: AWS refused the credentials ({code}: {message}): "
                f"{CREDENTIALS_HINT}, with EMR permissions"
            ) from None
        raise other(f"{what}: {code}: {message}") from None
    except aws.BotoCoreError as e:  # anything else botocore reports, still one line
        raise PropensityError(f"{what}: {e}") from None


def build_steps(day: str, train_image: str | None = None, force: bool = False) -> list[dict]:
    """The EMR step definitions of one day, in order, for `add_job_flow_steps`."""
    redo = ["--force"] if force else []

    def step(name: str, args: list[str], on_failure: str) -> dict:
        return {
            "Name": f"propensity {name} {day}",
            "ActionOnFailure": on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": [WRAPPER, *args]},
        }

    def daily(only: str) -> list[str]:
        return ["daily", "--date", day, "--only", only, *redo]

    if train_image:
        # Host network: the container reaches the instance profile's credentials like the node.
        train = [
            "docker", "run", "--rm", "--gpus", "all", "--network", "host",
            "-v", "/etc/propensity:/etc/propensity:ro", "-e", "PROPENSITY_CONFIG",
            train_image, *daily("train"),
        ]  # fmt: skip
    else:
        train = ["propensity", *daily("train")]
    aggregate = [
        "spark-submit", "--master", "yarn", "--deploy-mode", "client",
        "--conf", f"spark.pyspark.python={HOME}/venv/bin/python",
        AGGREGATE_JOB, "--date", day,
    ]  # fmt: skip
    return [
        # Without the day's histories nothing else can run: stop the day, keep the cluster.
        step("aggregate", aggregate, "CANCEL_AND_WAIT"),
        # A rejected candidate (exit 10) leaves the champion serving: score anyway.
        step("train", train, "CONTINUE"),
        step("score", ["propensity", *daily("score")], "CANCEL_AND_WAIT"),
        step("monitor", ["propensity", *daily("monitor")], "CONTINUE"),
    ]


def emr_client():
    """An EMR client from the default credential chain (honours AWS_ENDPOINT_URL[_EMR])."""
    import boto3

    with aws_errors("EMR client"):
        return boto3.client("emr")


def submit(client, cluster_id: str, steps: list[dict]) -> list[str]:
    """Add the steps to a running cluster; their ids, in order."""
    # A cluster EMR does not know (or refuses to describe) is missing input (exit 3).
    with aws_errors(f"EMR cluster {cluster_id}", other=MissingInput):
        state = client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"]
    if state.startswith("TERMINAT"):
        raise UsageError(f"EMR cluster {cluster_id} is {state}: start a cluster and submit to it")
    with aws_errors(f"EMR cluster {cluster_id}: adding steps"):
        ids = client.add_job_flow_steps(JobFlowId=cluster_id, Steps=steps)["StepIds"]
    log.info(kv(event="emr_steps_added", cluster=cluster_id, steps=",".join(ids)))
    return ids


@dataclass
class StepState:
    id: str
    name: str
    state: str
    reason: str = ""


def states(client, cluster_id: str, step_ids: list[str]) -> list[StepState]:
    out = []
    for sid in step_ids:
        with aws_errors(f"EMR cluster {cluster_id}: step {sid}"):
            s = client.describe_step(ClusterId=cluster_id, StepId=sid)["Step"]
        status = s["Status"]
        failure = status.get("FailureDetails") or {}
        reason = failure.get("Message") or failure.get("Reason") or ""
        if failure.get("LogFile"):
            reason = f"{reason} (log: {failure['LogFile']})".strip()
        out.append(StepState(sid, s["Name"], status["State"], reason))
    return out


def wait(
    client, cluster_id: str, step_ids: list[str], poll_seconds: float, timeout_s: float
) -> list[StepState]:
    """Poll until every step has ended; the final states. Raises when `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while True:
        current = states(client, cluster_id, step_ids)
        for s in current:
            if last.get(s.id) != s.state:
                log.info(kv(event="emr_step", step=s.name.replace(" ", "_"), state=s.state))
                last[s.id] = s.state
        if all(s.state in TERMINAL for s in current):
            return current
        if time.monotonic() > deadline:
            raise PropensityError(
                f"EMR steps on {cluster_id} still running after {timeout_s:.0f} s: "
                + ", ".join(f"{s.name}={s.state}" for s in current)
            )
        time.sleep(poll_seconds)


def exit_code(cfg: Config, day: str, final: list[StepState]) -> int:
    """The day's exit code from EMR's step states and the run records the steps wrote.

    EMR only says FAILED; the step's run record (`<reports>/runs/<day>-*.json`, written by
    `propensity daily --only STEP` on the cluster) says why: 10 gate rejected, 11/12 alerts,
    or the failure's own code. A failed step without a record (the spark-submit aggregation,
    or a crash before the record was written) counts as 1.
    """

    records = []
    runs = storage.join(cfg.uri("reports"), "runs")
    for uri in storage.list_files(runs, suffix=".json"):
        if uri.rsplit("/", 1)[-1].startswith(f"{day}-"):
            records.append(storage.read_json(uri))
    records.sort(key=lambda r: r["record"])  # named by day and start time: the latest last
    codes = []
    for s in final:
        if s.state == "COMPLETED":
            continue
        step = s.name.split()[1]
        mine = [x for r in records for x in r["steps"] if x["step"] == step]
        code = mine[-1]["exit_code"] if mine else 1
        codes.append(code or 1)  # EMR saw it fail: never report success
    failures = [c for c in codes if c not in ALERT_ORDER]
    if failures:
        return failures[0]
    return next((int(c) for c in ALERT_ORDER if c in codes), 0)
