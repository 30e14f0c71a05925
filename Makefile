# Two commands from a fresh clone: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test install bench clean k8s-control-plane lint docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/musetalk-server serve

# Static checks first (seconds), then the suite. The browser tests need Debian's chromium; the
# script installs it when missing (as root).
test: $(STAMP) k8s-control-plane lint
	bash .ci/chromium.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# A real kube-apiserver, etcd and kube-controller-manager for tests/k8s_real, built from Debian
# packages into ~/.cache/musetalk-k8s once (about 7 minutes of 2 cores), then reused; the tests
# start and stop it (about 10 s). A failed build fails `make test`. MUSETALK_SKIP_K8S_REAL=1 skips
# the build and those tests: a developer's explicit opt-out, never set in CI.
k8s-control-plane: $(STAMP)
	@if [ "$${MUSETALK_SKIP_K8S_REAL:-}" = 1 ]; then \
		echo "MUSETALK_SKIP_K8S_REAL=1: no real control plane; tests/k8s_real will be skipped"; \
	else $(BIN)/python scripts/k8s_control_plane.py build; fi

# Speed and quality tables (minutes, not part of the tests): the service over HTTP, lip-sync
# quality on the ground-truth clips, the musetalk engine on tiny models (pass
# MUSETALK_BENCH_ARGS='--size full --device cuda:0' on a GPU machine), and reliability
# (schema-driven fuzzing and the hostile media corpus).
bench: $(STAMP)
	$(BIN)/python bench/service_bench.py
	$(BIN)/python bench/lipsync_eval.py
	$(BIN)/python bench/other_voices.py
	$(BIN)/python bench/load_bench.py
	$(BIN)/python bench/musetalk_bench.py $(MUSETALK_BENCH_ARGS)
	$(BIN)/python bench/fuzz_bench.py
	$(BIN)/python bench/realtime_bench.py

clean:
	rm -rf $(VENV) results .pytest_cache

# The tables the code writes into docs/ (errors from the error tree, settings from Settings);
# the tests fail while they are stale.
docs: $(STAMP)
	$(BIN)/python scripts/docs_tables.py
