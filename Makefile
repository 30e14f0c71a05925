# Two commands from a fresh clone: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/musetalk-server serve

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Speed and quality tables (minutes, not part of the tests): the service over HTTP, lip-sync
# quality on the ground-truth clips, and the musetalk engine on tiny models (pass
# MUSETALK_BENCH_ARGS='--size full --device cuda:0' on a GPU machine).
bench: $(STAMP)
	$(BIN)/python bench/service_bench.py
	$(BIN)/python bench/lipsync_eval.py
	$(BIN)/python bench/load_bench.py
	$(BIN)/python bench/musetalk_bench.py $(MUSETALK_BENCH_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache
