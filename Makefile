# The two commands of the README: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= models/mnist-0to4
CONFIG ?= configs/mnist-0to4.json
# The data root: $OPENSET_DATA_DIR, else ../shared/data where it exists, else torchvision's download cache.
export OPENSET_DATA_DIR ?= $(if $(wildcard ../shared/data/MNIST),$(abspath ../shared/data),)

.PHONY: install run train evaluate test test-docker lint audit browser clean

$(BIN)/openset: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[train,serve,dev]"
	touch $@

install: $(BIN)/openset

## run: serve the shipped model on http://127.0.0.1:8000 (TRAIN=1: re-create it first from its config)
run: install
ifeq ($(TRAIN),1)
	$(MAKE) train
endif
	OPENSET_MODEL_DIR=$(MODEL) $(BIN)/openset-serve

## evaluate: re-measure the shipped model with ONNX Runtime on the test data
evaluate: install
	$(BIN)/openset evaluate --model $(MODEL)

## train: re-create the shipped model from its config (about 3 minutes on 2 cores)
train: install
	$(BIN)/openset train --config $(CONFIG) --out $(MODEL)

## test: lint and the whole test suite but the Docker group (the demo-page test drives Debian's Chromium)
test: install lint browser
	$(BIN)/python -m pytest -q -m "not docker"

## test-docker: build the serving image and test it for real (needs a Docker engine;
## here: ../shared/tools/docker-sandbox up)
test-docker: install
	$(BIN)/python -m pytest -q -m docker

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## audit: known vulnerabilities in the installed dependencies (PyPI's advisory data, via pip-audit)
audit: install
	$(BIN)/pip-audit --skip-editable --progress-spinner off

lint: install
	$(BIN)/ruff check openset training service tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
