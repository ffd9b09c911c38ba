# The two commands: `make demo` and `make test`. Each creates .venv and installs from nothing when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/mini

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install clean bench bench-gpu bench-scale

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	rm -rf $(OUT)
	$(BIN)/counterfactory run configs/mini.yaml --output $(OUT)
	$(BIN)/counterfactory verify $(OUT)
	@echo "demo output: $(abspath $(OUT))  (shards/, manifest/, stats.json, README.md)"

# Two workers: the modules on the session's Ray in one (tests/conftest.py: RAY_MODULES), the rest in the other.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadscope

bench: $(STAMP)
	$(BIN)/python benchmarks/stage_throughput.py
	$(BIN)/python benchmarks/pipeline_vs_loop.py --repeat 3
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/writer.py
	$(BIN)/python benchmarks/early_rejection.py

bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py

bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu_editor.py

clean:
	rm -rf out .pytest_cache
