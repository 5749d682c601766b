#!/usr/bin/env bash
# Run by hand after `make test` (which installs pyspark 3.5 into .venv/pyspark35), on an idle machine:
#   DIR=/tmp/bench-spark-lines bash benchmarks/bench_spark_lines.sh
# aggregate --full of one generated day on Spark 4.x and 3.5, same events; rows compared.
set -euo pipefail
cd /work/main
P=.venv/bin/propensity
D=2026-01-14
rm -rf ${DIR:-/tmp/bench-spark-lines}/s4 ${DIR:-/tmp/bench-spark-lines}/s35
[ -d ${DIR:-/tmp/bench-spark-lines}/events ] || $P generate --out ${DIR:-/tmp/bench-spark-lines}/events --start 2026-01-01 --days 14 --profiles 20000 --seed 1 >/dev/null 2>&1
for line in 4 35; do
  if [ $line = 35 ]; then export PYTHONPATH=/work/main/.venv/pyspark35; else unset PYTHONPATH; fi
  echo "== spark $line: $(.venv/bin/python -c 'import pyspark; print(pyspark.__version__)')  uptime: $(uptime)"
  /usr/bin/time -f "wall %e s, max rss %M KB" $P aggregate --date $D --full \
     --set storage.root=${DIR:-/tmp/bench-spark-lines}/s$line --set storage.events=${DIR:-/tmp/bench-spark-lines}/events --set spark.master=local[2] 2>&1 \
     | grep -E "seconds|events_read|window_events_read|profiles|wall" | cut -c1-150
done
unset PYTHONPATH
DIR=${DIR:-/tmp/bench-spark-lines} .venv/bin/python - <<'PY'
import os, pyarrow.dataset as ds
def rows(root):
    return ds.dataset(f"{os.environ.get('DIR', '/tmp/bench-spark-lines')}/{root}/histories/dt=2026-01-14", format="parquet").to_table().sort_by("profile_id")
a, b = rows("s4"), rows("s35")
print("rows", a.num_rows, b.num_rows, "schema equal", a.schema.equals(b.schema), "identical", a.equals(b))
PY
