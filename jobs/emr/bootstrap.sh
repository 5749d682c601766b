#!/usr/bin/env bash
# EMR bootstrap action: install propensity on every node of the cluster.
#
#   --bootstrap-actions Path=s3://BUCKET/releases/0.1.0/jobs/emr/bootstrap.sh,Args=[s3://BUCKET/releases/0.1.0,SECRET_ID]
#
# RELEASE_URI is an S3 prefix holding what docs/cycle.md ("Release to S3") uploads: the wheel
# (propensity-*.whl), constraints.txt, config.yaml and jobs/. SECRET_ID (optional) names the
# Secrets Manager secret with the pseudonymisation key; steps fetch it when they start, so the
# key is never written to disk or shown in the step arguments.
#
# Result on every node:
#   /opt/propensity/venv          Python 3.11 virtual environment with the package
#   /opt/propensity/jobs          the job scripts (spark-submit entry points)
#   /etc/propensity/config.yaml   the config every step uses ($PROPENSITY_CONFIG)
#   /usr/local/bin/propensity     the CLI
#   /usr/local/bin/propensity-step  the wrapper each EMR step runs through (see jobs/emr/steps.json)
set -euo pipefail

RELEASE_URI="${1:?usage: bootstrap.sh s3://bucket/releases/VERSION [SECRET_ID]}"
SECRET_ID="${2:-}"
HOME_DIR=/opt/propensity

# Amazon Linux 2023 (EMR 7.x, emr-spark-8.0.0): the system Python is older than the package needs.
sudo dnf install -y -q python3.11 python3.11-pip

sudo mkdir -p "$HOME_DIR" /etc/propensity
sudo chown "$(id -u):$(id -g)" "$HOME_DIR"
aws s3 cp --recursive --only-show-errors "$RELEASE_URI" "$HOME_DIR/release"
cp -r "$HOME_DIR/release/jobs" "$HOME_DIR/jobs"
sudo cp "$HOME_DIR/release/config.yaml" /etc/propensity/config.yaml

python3.11 -m venv "$HOME_DIR/venv"
# Same constraints as every other install: torch stays at the pinned build. The wheel without its
# `spark` extra: no pip pyspark in the venv. The cluster's own Spark (3.5 on EMR 7, 4.0 on
# emr-spark-8.0.0) is what spark-submit puts on the job's PYTHONPATH, so Python and JVM match.
"$HOME_DIR/venv/bin/pip" install --quiet -c "$HOME_DIR/release/constraints.txt" "$HOME_DIR"/release/propensity-*.whl
sudo ln -sf "$HOME_DIR/venv/bin/propensity" /usr/local/bin/propensity

sudo tee /usr/local/bin/propensity-step >/dev/null <<WRAPPER
#!/usr/bin/env bash
# Runs one step of the daily cycle with the cluster's config and the pseudonymisation key.
set -euo pipefail
export PROPENSITY_CONFIG=/etc/propensity/config.yaml
export PYSPARK_PYTHON=$HOME_DIR/venv/bin/python
export PATH=$HOME_DIR/venv/bin:\$PATH
if [ -n "$SECRET_ID" ]; then
  PROPENSITY_PSEUDONYM_KEY="\$(aws secretsmanager get-secret-value --secret-id "$SECRET_ID" \
    --query SecretString --output text)"
  export PROPENSITY_PSEUDONYM_KEY
fi
exec "\$@"
WRAPPER
sudo chmod 755 /usr/local/bin/propensity-step
echo "propensity installed from $RELEASE_URI: $(/usr/local/bin/propensity --version)"
