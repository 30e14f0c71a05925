# Two commands from a fresh clone: `make serve` and `make test` (`make test-quick` for daily work).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The framework integrations (integrations/) in a venv of their own: Pipecat and LiveKit need
# protobuf 5+, the server's mediapipe needs protobuf 4. It holds the client, no torch.
INT_VENV ?= .venv-integrations
INT_BIN := $(INT_VENV)/bin
INT_STAMP := $(INT_VENV)/.installed

.PHONY: serve test test-quick test-integrations install bench clean k8s-control-plane lint docs

# The server with its test tools, and the Python client (its own distribution, clients/python),
# which the tests, the benchmarks and examples/ use.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e clients/python
	touch $(STAMP)

$(INT_STAMP): clients/python/pyproject.toml integrations/pipecat/pyproject.toml integrations/livekit/pyproject.toml
	$(PYTHON) -m venv $(INT_VENV)
	$(INT_BIN)/pip install -q --upgrade pip
	$(INT_BIN)/pip install -q -e clients/python -e 'integrations/pipecat[example,test]' -e integrations/livekit
	touch $(INT_STAMP)

install: $(STAMP) $(INT_STAMP)

serve: $(STAMP)
	$(BIN)/musetalk-server serve

# Static checks first (seconds), then the suite. The tests run Debian programs for real (chromium,
# nginx, haproxy, prometheus, coturn); the script installs those missing (as root).
test: $(STAMP) k8s-control-plane lint test-integrations
	bash .ci/debian_packages.sh
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The integrations' own tests, in their venv, against a real server started from the server's venv.
test-integrations: $(STAMP) $(INT_STAMP)
	bash .ci/debian_packages.sh
	cd integrations/pipecat && ../../$(INT_BIN)/python -m mypy
	cd integrations/livekit && ../../$(INT_BIN)/python -m mypy
	cd integrations && MUSETALK_SERVER_PYTHON=$(abspath $(BIN))/python ../$(INT_BIN)/python -m pytest -q

# Everything but the tests marked slow (each over about 5 s here: real control plane, browser,
# quality bars, long renders): under 3 minutes on a 2-core VM, with no control plane to build.
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

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
# The scripts are modules of the bench package, run from the repository root.
bench: $(STAMP)
	$(BIN)/python -m bench.service_bench
	$(BIN)/python -m bench.lipsync_eval
	$(BIN)/python -m bench.other_voices
	$(BIN)/python -m bench.load_bench
	$(BIN)/python -m bench.musetalk_bench $(MUSETALK_BENCH_ARGS)
	$(BIN)/python -m bench.fuzz_bench
	$(BIN)/python -m bench.realtime_bench
	$(BIN)/python -m bench.webrtc_bench
	$(BIN)/python -m bench.webrtc_browser_bench

clean:
	rm -rf $(VENV) $(INT_VENV) results .pytest_cache

# The tables the code writes into docs/ (errors from the error tree, settings from Settings);
# the tests fail while they are stale.
docs: $(STAMP)
	$(BIN)/python scripts/docs_tables.py
