# image_poser: every job is one target. The README's quick start is `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE ?= disabled

.PHONY: demo reproduce test test-fast install export clean-nbs check-sync lint format docs readme clean

# Create the venv and install the package with its dev tools (CPU-only torch, pinned).
# The stamp holds pyproject.toml's hash: nbdev-export rewrites the file (same content, new mtime), which must not reinstall.
PYPROJECT_HASH = $$(sha256sum pyproject.toml | cut -d' ' -f1)
$(STAMP): pyproject.toml
	@if [ -x $(BIN)/python ] && [ "$$(cat $(STAMP) 2>/dev/null)" = "$(PYPROJECT_HASH)" ]; then touch $(STAMP); else \
	  set -e; test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install -q --upgrade pip; \
	  $(BIN)/python -m pip install -q -e ".[dev,ray]"; \
	  echo "$(PYPROJECT_HASH)" > $(STAMP); fi

install: $(STAMP)

# The main job on the embedded shapes world: train PPO and DQN, evaluate them against every baseline, ablations, figures
# (~10 minutes on 2 cores); prints the main table and where the report and pictures are (paper/quick/).
demo: $(STAMP)
	$(BIN)/image-poser reproduce --quick

# The full report in paper/ (~1.5 hours on 2 cores).
reproduce: $(STAMP)
	$(BIN)/image-poser reproduce

# Every test, offline: pytest over tests/ and one item per notebook in nbs/.
test: $(STAMP)
	$(BIN)/python -m pytest tests -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow"

export: $(STAMP)
	$(BIN)/nbdev-export

clean-nbs: $(STAMP)
	$(BIN)/nbdev-clean

# Fail if the notebooks are not clean, the library is not what nbdev-export makes of them, or the lint gate fails.
check-sync: $(STAMP)
	bash tools/check_sync.sh

# The lint gate (ruff: pyflakes F, import order I, statements E7) over the notebooks, tests, tools and the exported library.
lint: $(STAMP)
	$(BIN)/ruff check nbs tests tools image_poser
	$(BIN)/ruff format --check nbs tests tools

# Format the notebooks, tests and tools (then `make export` regenerates the library).
format: $(STAMP)
	$(BIN)/ruff format nbs tests tools
	$(BIN)/ruff check --fix nbs tests tools

docs: $(STAMP)
	$(BIN)/python tools/build_docs.py

readme: $(STAMP)
	$(BIN)/python tools/build_docs.py --readme-only

clean:
	rm -rf _proc _docs .pytest_cache
