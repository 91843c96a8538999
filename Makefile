# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The shipped models: models/<name>, each made from configs/<name>.json (the first is the default model).
MODELS ?= mnist-0to4 mnist-0to4-cnn

.PHONY: run train evaluate test test-docker lint audit browser clean

# Each job installs only what it needs into the one venv (a stamp per set of extras):
#   serve  ONNX Runtime + FastAPI, about 240 MB: serving and `openset evaluate`
#   train  adds torch, scikit-learn, Optuna, Ray (the CUDA build of torch on Linux: several GB)
#   dev    adds the test tools
# TORCH_INDEX=https://download.pytorch.org/whl/cpu takes torch and torchvision (the pinned versions) from
# PyTorch's CPU-only index first: a few hundred MB instead of the CUDA build.
EXTRAS_serve := serve
EXTRAS_train := serve,train
EXTRAS_dev := serve,train,dev
TORCH_INDEX ?=
# -qq: errors only (setuptools prints a notice box on every editable install).
PIP := $(BIN)/pip install -qq
$(VENV)/.installed-%: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(if $(and $(TORCH_INDEX),$(filter-out serve,$*)),$(PIP) -c constraints.txt --index-url $(TORCH_INDEX) torch torchvision)
	$(PIP) -c constraints.txt -e ".[$(EXTRAS_$*)]"
	@touch $@

## run: serve the shipped models (every folder of models/) on http://127.0.0.1:8000 (TRAIN=1: re-create them
## first from their configs)
run: $(VENV)/.installed-serve
ifeq ($(TRAIN),1)
	$(MAKE) train
endif
	$(BIN)/openset-serve

## evaluate: re-measure the shipped models with ONNX Runtime on the test data (no torch needed)
evaluate: $(VENV)/.installed-serve
	for name in $(MODELS); do $(BIN)/openset evaluate --model models/$$name || exit 1; done

## train: re-create the shipped models from their configs
train: $(VENV)/.installed-train
	for name in $(MODELS); do $(BIN)/openset train --config configs/$$name.json --out models/$$name || exit 1; done

## test: lint and the whole test suite but the Docker group (the demo-page tests drive Debian's Chromium)
test: $(VENV)/.installed-dev lint browser
	$(BIN)/python -m pytest -q -m "not docker"

## test-docker: build the serving image and test it for real (needs a Docker engine;
## here: ../shared/tools/docker-sandbox up)
test-docker: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -m docker

# Chromium for the browser tests: installed with apt-get where we are root, else one line says how.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium not found, so the browser tests will be skipped: install it (Debian/Ubuntu: sudo apt-get install chromium)"; \
	  fi; }

## audit: known vulnerabilities in the installed dependencies (PyPI's advisory data, via pip-audit)
audit: $(VENV)/.installed-dev
	$(BIN)/pip-audit --skip-editable --progress-spinner off

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check openset training service tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

## peers: the model servers that benchmarks/serve_bench.py runs beside openset (KServe, BentoML, LitServe),
## each in its own venv .peers/<name> from benchmarks/peers/<name>.txt (the script makes missing ones too)
PEERS := kserve bentoml litserve
.PHONY: peers
peers: $(PEERS:%=.peers/%/.installed)
.peers/%/.installed: benchmarks/peers/%.txt
	@test -x .peers/$*/bin/python || $(PYTHON) -m venv .peers/$*
	.peers/$*/bin/pip install -qq -r $<
	@cp $< $@
