# Set-up is part of every target: a fresh machine needs only Python 3.11, Java 17 and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch's CPU build: PyPI's Linux torch is the CUDA build (several GB of CUDA libraries), so
# pip also asks PyTorch's CPU index, whose torch==2.13.0+cpu wins over PyPI's 2.13.0. Where pip's
# sources are set in the environment (PIP_INDEX_URL or PIP_FIND_LINKS: a mirror, or a local
# wheel folder with the CPU wheel) they stand alone; `make install TORCH_INDEX=URL` names
# another index, `make install TORCH_INDEX=` none.
TORCH_INDEX ?= $(if $(PIP_INDEX_URL)$(PIP_FIND_LINKS),,https://download.pytorch.org/whl/cpu)
PIP    := $(BIN)/pip install -c constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))

# The second Spark line CI tests (EMR 7.x and Databricks 14.3-16.4 run Spark 3.5), installed
# beside the venv's newest 4.x and put first on PYTHONPATH; py4j is the one that pyspark pins.
PYSPARK35 := 3.5.9
PY4J35    := 0.10.9.7
SPARK35   := $(VENV)/pyspark35
# hadoop-aws for the Spark-on-S3 tests (s3a:// against moto on loopback). No registry this
# machine reaches serves Maven; sagemaker-pyspark's sdist (PyPI) bundles hadoop-aws 3.3.1 with
# its AWS SDK bundle, which is Hadoop 3.3 as in Spark 3.5. The tests find them in $(S3A_JARS).
S3A_SDIST := sagemaker-pyspark==1.4.5
S3A_JARS  := $(VENV)/s3a-jars
# The tests that start Spark (the aggregation, Spark scoring, Spark on S3, the demo end to
# end): run again on the 3.5 line. Not the SIGKILL test (tests/test_aggregate_kill.py, five
# aggregate processes): what it checks is our marker protocol, not the Spark line, and it
# would add two minutes to CI.
SPARK_TESTS := tests/test_aggregate_transform.py tests/test_aggregate_job.py \
               tests/test_spark_s3.py tests/test_cycle_demo.py \
               tests/test_score.py::test_spark_engine_writes_the_same_predictions

.PHONY: install test test-spark35 demo bench lint clean

$(BIN)/propensity: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[dev,spark]'
	touch $@

$(SPARK35)/pyspark/__init__.py: | $(BIN)/propensity
	$(PIP) --quiet --no-deps --target $(SPARK35) pyspark==$(PYSPARK35) py4j==$(PY4J35)

$(S3A_JARS)/hadoop-aws-3.3.1.jar: | $(BIN)/propensity
	rm -rf $(S3A_JARS) $(VENV)/s3a-download && mkdir -p $(S3A_JARS)
	$(BIN)/pip download -c constraints.txt --quiet --no-deps -d $(VENV)/s3a-download $(S3A_SDIST)
	tar -xzf $(VENV)/s3a-download/sagemaker_pyspark-*.tar.gz -C $(S3A_JARS) --strip-components=3 \
	    --wildcards '*/deps/jars/hadoop-aws-3.3.1.jar' '*/deps/jars/aws-java-sdk-bundle-1.11.901.jar'
	rm -rf $(VENV)/s3a-download

install: $(BIN)/propensity

test: install $(S3A_JARS)/hadoop-aws-3.3.1.jar $(SPARK35)/pyspark/__init__.py  ## the suite on the newest Spark 4.x, then the Spark tests on 3.5 (what CI runs)
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory test-spark35

test-spark35: install $(S3A_JARS)/hadoop-aws-3.3.1.jar $(SPARK35)/pyspark/__init__.py  ## the Spark tests again on pyspark 3.5
	PYTHONPATH=$(abspath $(SPARK35)) $(BIN)/pytest -q $(SPARK_TESTS)

demo: install            ## the daily cycle end to end on generated data, in ./demo
	$(BIN)/propensity demo --dir demo

bench: install           ## every benchmark (slow: run by hand)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo propensity-data .pytest_cache
