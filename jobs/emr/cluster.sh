#!/usr/bin/env bash
# Create the EMR on EC2 cluster that the daily steps (jobs/emr/steps.json) run on.
#
#   jobs/emr/cluster.sh s3://BUCKET/releases/0.1.0 [RELEASE_LABEL] [SECRET_ID]
#
# RELEASE_LABEL (docs/cycle.md, "EMR"):
#   emr-7.13.0       Spark 3.5.6-amzn-2, Java 17, ANSI off by default (the default here)
#   emr-spark-8.0.0  Spark 4.0.2-amzn-0, Java 17, ANSI on by default
# The job gives the same rows on both (no behaviour depends on ANSI mode); paths stay s3://
# (EMRFS) and Parquet is written by the EMRFS S3-optimised committer (jobs/emr/configurations.json).
set -euo pipefail

RELEASE="${1:?usage: cluster.sh s3://bucket/releases/VERSION [RELEASE_LABEL] [SECRET_ID]}"
LABEL="${2:-emr-7.13.0}"
SECRET_ID="${3:-propensity/pseudonym-key}"
HERE="$(cd "$(dirname "$0")" && pwd)"

aws emr create-cluster --name "propensity ($LABEL)" --release-label "$LABEL" \
  --applications Name=Spark --use-default-roles \
  --configurations "file://$HERE/configurations.json" \
  --instance-groups InstanceGroupType=MASTER,InstanceCount=1,InstanceType=g5.xlarge \
                    InstanceGroupType=CORE,InstanceCount=2,InstanceType=m5.2xlarge \
  --bootstrap-actions "Path=$RELEASE/jobs/emr/bootstrap.sh,Args=[$RELEASE,$SECRET_ID]" \
  --query ClusterId --output text
