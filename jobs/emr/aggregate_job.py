"""spark-submit entry point of `propensity aggregate` (EMR steps, any YARN or standalone cluster).

    spark-submit --master yarn --deploy-mode client \
        --conf spark.pyspark.python=/opt/propensity/venv/bin/python \
        /opt/propensity/jobs/emr/aggregate_job.py --date 2026-01-20 [--full | --bootstrap] [--set k=v]

Same options, output and exit codes as `propensity aggregate` (it is that command): the config
comes from $PROPENSITY_CONFIG (set by the `propensity-step` wrapper of jobs/emr/bootstrap.sh),
the pseudonymisation key from $PROPENSITY_PSEUDONYM_KEY. The session is the one spark-submit
started, so its --master/--conf (and the cluster's spark-defaults from
jobs/emr/configurations.json) win over the config's `spark` section.
"""

import sys

from propensity.cli import app

if __name__ == "__main__":
    app(["aggregate", *sys.argv[1:]], prog_name="aggregate_job.py")
