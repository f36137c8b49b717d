# flopwatch developer tasks. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: all venv tools test lint typecheck pytest nvml-double demo proto bench bench-agent bench-collector soak fuzz gpu-check clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

## System tools the deploy tests use: promtool and prometheus (Debian package `prometheus`).
## Installed only when promtool is missing (CI runs as root; non-interactive).
tools:
	@command -v promtool >/dev/null 2>&1 || { \
		echo "installing Debian package prometheus (promtool, prometheus)"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	}

## The test command (README, CI): lint, types, then the whole suite.
test: tools lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) nvml-double
	$(BIN)/pytest

## The NVML test double (tests/nvml_double/README.md): a C stand-in for libnvidia-ml.so.1 that
## serves a recorded trace to the real pynvml. Needs a C compiler ($(CC), default cc). The same
## command is in tests/nvml_double/harness.py, which builds it when plain pytest runs first.
NVML_DOUBLE_SRC    := tests/nvml_double/nvml_double.c
NVML_DOUBLE_CFLAGS := -std=c11 -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror
NVML_DOUBLE_LIBS   := -lm -lpthread

build/nvml-double/libnvidia-ml.so.1: $(NVML_DOUBLE_SRC)
	mkdir -p $(@D)
	$(CC) $(NVML_DOUBLE_CFLAGS) -o $@ $< $(NVML_DOUBLE_LIBS)

## The same library without the *_v3 symbols: a driver older than pynvml expects.
build/nvml-double-no-v3/libnvidia-ml.so.1: $(NVML_DOUBLE_SRC)
	mkdir -p $(@D)
	$(CC) $(NVML_DOUBLE_CFLAGS) -DNVML_DOUBLE_NO_V3 -o $@ $< $(NVML_DOUBLE_LIBS)

nvml-double: build/nvml-double/libnvidia-ml.so.1 build/nvml-double-no-v3/libnvidia-ml.so.1

## The demo: embedded collector (SQLite) + agent replaying the bundled H100 trace.
demo: $(STAMP)
	$(BIN)/flopwatch demo

## Regenerate flopwatch/v1/*_pb2*.py from proto/ (committed; tests check they are current).
proto: $(STAMP)
	$(BIN)/python proto/generate.py

## Agent overhead: the real agent on 8 simulated GPUs for BENCH_SECONDS; CPU % of one core and
## peak RSS (targets 0.5 % and 80 MB). Not part of `make test` or the demo.
BENCH_SECONDS ?= 60
bench-agent: $(STAMP)
	$(BIN)/python bench/agent_overhead.py --seconds $(BENCH_SECONDS)

## Collector throughput: raw Ed25519 verifications/s, the ingest stages in process, and signed
## 8-GPU envelopes streamed over gRPC into one collector on SQLite (bench/collector_throughput.py),
## with 1 and with 10 intervals per envelope; the collector runs --verify-workers auto.
bench-collector: $(STAMP)
	$(BIN)/python bench/collector_throughput.py
	$(BIN)/python bench/collector_throughput.py --intervals 10

## Soak: SOAK_NODES simulated nodes (8 GPUs each, one envelope per node every SOAK_INTERVAL s)
## streaming live into one collector for SOAK_SECONDS; throughput, p50/p99 ingest-to-visible
## latency, memory growth, CPU (bench/soak.py). The figures in docs/RELIABILITY.md came from it.
SOAK_NODES ?= 1000
SOAK_INTERVAL ?= 3
SOAK_SECONDS ?= 600
soak: $(STAMP)
	$(BIN)/python bench/soak.py --nodes $(SOAK_NODES) --interval $(SOAK_INTERVAL) \
		--seconds $(SOAK_SECONDS)

## Every benchmark above (about 15 minutes, most of it the soak).
bench: bench-agent bench-collector soak

## GPU check, on a machine with an NVIDIA GPU only (never in CI): the agent on real NVML beside
## matrix products whose operation count is exact; prints estimate and upper bound against the
## exact count, the agent's CPU and RSS, and the workload's slowdown (bench/gpu_check.py, about
## 2 minutes). GPU_PYTHON must import torch with CUDA and flopwatch's dependencies.
GPU_PYTHON ?= $(BIN)/python
GPU_CHECK_SECONDS ?= 15
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py --seconds $(GPU_CHECK_SECONDS) --kinds bf16,tf32,fp64,fp32

## Coverage-guided fuzzing (atheris) of the envelope parser and record verifier, then of the
## C2SP log parsers (notes, checkpoints, witness requests, policies, tiles), of in-toto
## statements and of the files an operator hands over (collector config, JOBS.json, records
## archive); not part of `make test` (tests/hostile/test_fuzz_*.py runs each briefly).
## FUZZ_RUNS inputs per target (FUZZ_FILE_RUNS for the file targets); a crashing input goes
## to $(FUZZ_OUT)/crash-<sha1> ($(FUZZ_OUT)/<target>-crash-<sha1> for the file targets).
FUZZ_RUNS ?= 200000
FUZZ_FILE_RUNS ?= 100000
FUZZ_OUT  ?= /tmp/flopwatch-fuzz
FUZZ_FILE_TARGETS := config jobs_file archive
fuzz: $(STAMP)
	mkdir -p $(FUZZ_OUT)
	$(BIN)/python tests/hostile/fuzz_envelope.py -atheris_runs=$(FUZZ_RUNS) \
		-artifact_prefix=$(FUZZ_OUT)/
	$(BIN)/python tests/hostile/fuzz_tlog.py -atheris_runs=$(FUZZ_RUNS) \
		-artifact_prefix=$(FUZZ_OUT)/
	$(BIN)/python tests/hostile/fuzz_intoto.py -atheris_runs=$(FUZZ_RUNS) \
		-artifact_prefix=$(FUZZ_OUT)/
	for t in $(FUZZ_FILE_TARGETS); do \
		$(BIN)/python tests/hostile/fuzz_$$t.py -atheris_runs=$(FUZZ_FILE_RUNS) \
			-artifact_prefix=$(FUZZ_OUT)/$$t- $(FUZZ_OUT)/corpus-$$t || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
