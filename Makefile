# Every target installs what it needs: a fresh clone needs only Python 3.11 and make.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RECFLOW_HOME ?= $(CURDIR)/var
# The machines have no internet: no library may wait on telemetry.
export GX_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export AIRFLOW__USAGE_DATA_COLLECTION__ENABLED := False
export SCARF_ANALYTICS := false
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: install server-deps system-deps demo demo-movielens airflow mlflow serve test test-unit lint typecheck clean bench-ope bench-serving bench-quality check-serving-compat compose-smoke bench-tf32 bench-soak bench-scale bench-unique bench-serving-native native-deps

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/base.in requirements/dev.in
	@echo ">> creating/updating the virtual environment in $(VENV) (first time: ~2 minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/base.in -r requirements/dev.in -c requirements/constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# DATA=<MovieLens-100K folder> runs the same demo on MovieLens.
demo: install server-deps
	$(BIN)/python -m recflow.dev.demo $(if $(DATA),--data $(DATA)) $(DEMO_ARGS)

demo-movielens: install server-deps
	$(BIN)/python -m recflow.dev.demo --data $(or $(DATA),../shared/datasets/movielens-100k) $(DEMO_ARGS)

# Local UIs on the same $(RECFLOW_HOME) as the demo; each runs in the foreground (Ctrl-C stops it).
AIRFLOW_PORT ?= 8080
MLFLOW_PORT ?= 5000
SERVE_PORT ?= 8500

airflow: install
	$(BIN)/python -m recflow.dev.launch airflow --port $(AIRFLOW_PORT)

mlflow: install
	$(BIN)/python -m recflow.dev.launch mlflow --port $(MLFLOW_PORT)

serve: install server-deps
	$(BIN)/python -m recflow.dev.launch serve --port $(SERVE_PORT)

# $(call apt_install,PACKAGES,WHAT HAPPENS WITHOUT THEM): a shell step installing Debian
# PACKAGES when we are root and have apt-get, else saying what will happen without them.
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo ">> installing Debian packages $(1)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	else echo ">> not root: not installing $(1) ($(2))"; fi

# The local model server's allocator (recflow.serving.server.allocator): jemalloc from Debian when
# missing and we are root; without it the server runs on glibc's malloc and says so in its log.
server-deps:
	@ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 && exit 0; \
	$(call apt_install,libjemalloc2,the model server uses glibc's malloc)

# What the local server's native front end (--native_frontend, recflow.serving.native) builds
# predictd with on first use: installed when missing and we are root.
NATIVE_DEBS := gcc libc6-dev libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
native-deps:
	@if [ -e /usr/include/grpc/grpc.h ] && command -v protoc-c >/dev/null && command -v gcc >/dev/null \
	  && [ -e /usr/include/protobuf-c/protobuf-c.h ] && [ -e /usr/include/stdio.h ]; then exit 0; fi; \
	$(call apt_install,$(NATIVE_DEBS),--native_frontend will refuse to start and say so)

# Debian packages some tests need (besides native-deps): docker-compose (validates the compose
# file without an engine), chromium (the browser test) and postgresql (the server programs
# initdb/pg_ctl, found as tests/integration/pg.py finds them: PG_BIN_DIR, `pg_config --bindir`,
# /usr/lib/postgresql/<ver>/bin). Installed when missing and we are root; otherwise those tests
# skip and say why (under CI=true a skip fails the run: tests/_skip_guard.py).
system-deps: server-deps native-deps
	@missing=""; command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	pgbin="$${PG_BIN_DIR:-$$(pg_config --bindir 2>/dev/null)}"; \
	{ [ -n "$$pgbin" ] && [ -x "$$pgbin/initdb" ]; } || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	$(call apt_install,$$missing,the tests that need them will skip; under CI=true a skip fails the run)

# Lint and types first: they fail in seconds where the tests take minutes. Two workers, one per
# core (TEST_WORKERS=0 runs in one process); --dist loadfile keeps each file on one worker, in
# order, so a module's fixture (a DAG run, a PostgreSQL cluster) is built once.
TEST_WORKERS ?= 2
test: install system-deps lint typecheck
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "unit or dags or integration" --durations=25 tests

test-unit: install
	$(BIN)/python -m pytest -m unit tests

lint: install
	$(BIN)/ruff check src tests dags bench
	$(BIN)/ruff format --check src tests dags bench

typecheck: install
	$(BIN)/mypy

# OBD=<Open Bandit sample folder> DATA=<MovieLens-100K folder>; writes bench/results/ope.{json,md}
bench-ope: install
	$(BIN)/python bench/ope.py --data $(or $(OBD),../shared/datasets/open-bandit-small) --movielens $(or $(DATA),../shared/datasets/movielens-100k) --out bench/results

# Every model, both evaluation protocols, on MovieLens-100K; writes bench/results/quality.{json,md}
bench-quality: install
	$(BIN)/python bench/quality.py --data $(or $(DATA),../shared/datasets/movielens-100k) --out bench/results --final --jobs $(or $(JOBS),1)

# TF32 matmul error on scores, emulated on the CPU (basis of the served-answer tolerance);
# writes bench/results/tf32_tolerance.{json,md}
bench-tf32: install
	$(BIN)/python bench/tf32_tolerance.py --out bench/results

# Top-10 Predict latency over gRPC (one client, open-loop rates); writes bench/results/serving.{json,md}
bench-serving: install server-deps native-deps
	$(BIN)/python bench/serving.py --out bench/results

# Diagnostic: the local server with and without its native front end, side by side on the 50k
# model (bench/diagnostics/native_predict.py); writes bench/results/serving-native.{json,md}.
bench-serving-native: install server-deps native-deps
	$(BIN)/python bench/diagnostics/native_predict.py --out bench/results/serving-native

# Every model kind's SavedModel under the TF Serving release's TensorFlow (src/recflow/serving/
# release.py): a throwaway venv with tensorflow-cpu==<release> (created once under var/, ~1.5 GB),
# every signature run and compared with ours; writes bench/results/serving_compat.{json,md}
check-serving-compat: install
	$(BIN)/python bench/serving_compat.py --out bench/results

# On a Docker host: build and start the compose stack (GPU; CPU=1 without a GPU), wait for health,
# trigger recsys_training over the REST API, wait for success, ask TF Serving for label stable
# over gRPC and print the top-10; tears the stack down afterwards unless KEEP=1.
compose-smoke: install
	$(BIN)/python -m recflow.ops.compose_smoke $(if $(filter 1,$(CPU)),--cpu) $(if $(filter 1,$(KEEP)),--keep)

# 10 minutes of open-loop Predicts with a hot swap every 2 minutes and a hostile request every
# second, on a MovieLens-100K-size model; writes bench/results/soak.{json,md}
bench-soak: install server-deps
	$(BIN)/python bench/soak.py --out bench/results

clean:
	rm -rf var

# np.unique against recflow.arrays.sorted_unique on bench-scale's key sizes (1M, 5M, 20M events);
# writes bench/results/unique_cost.{json,md}
bench-unique: install
	$(BIN)/python bench/unique_cost.py --out bench/results

# Training DAG stages on generated logs of 1M, 5M and 20M events (ranking MLP, two-stage,
# SASRec, EASE) with the default recipe (SASRec stops early on validation);
# writes bench/results/scale.{json,md}. Hours on 2 cores: SIZES=1M,5M runs the smaller ones.
bench-scale: install
	$(BIN)/python bench/scale.py $(if $(SIZES),--sizes $(SIZES)) $(if $(MODELS),--models $(MODELS)) --out bench/results
