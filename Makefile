# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench bench-compile bench-sweep clean chromium

# the install ends by compiling and caching the demo's kernels (framework/warmup.py), so the first
# `make demo` loads them: the compile is paid here, once (README, "Compile time and sweeps")
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m framework.warmup
	touch $@

demo: $(BIN)/.installed
	$(BIN)/tradpal backtest sma_cross --data BTC_USDT-1d

# tests/test_report.py renders the HTML report in headless Chromium (Debian's package)
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update && \
		$(SUDO) apt-get install -y --no-install-recommends chromium; }

test: $(BIN)/.installed chromium
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python research/bench_core.py

bench-compile: $(BIN)/.installed
	$(BIN)/python research/bench_compile.py

bench-sweep: $(BIN)/.installed
	$(BIN)/python research/bench_sweep.py

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
