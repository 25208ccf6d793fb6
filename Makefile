# Every target sets itself up: a fresh clone needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-py312 lint bench clean install-browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m bot

test: $(STAMP) install-browser
	$(PY) -m pytest -q

# process_stream steps its turn by hand inside the caller's task: run the streaming tests on Python 3.12
# too when PY312 names a 3.12 interpreter (.ci/run finds one if the machine has it; a no-op without).
PY312 ?=
test-py312:
	@if [ -n "$(PY312)" ] && "$(PY312)" -c "import sys; assert sys.version_info[:2] == (3, 12)" 2>/dev/null; then \
		$(MAKE) --no-print-directory $(VENV)312/.installed PYTHON="$(PY312)" VENV=$(VENV)312 && \
		$(VENV)312/bin/python -m pytest -q tests/test_orchestrator.py tests/test_spec.py tests/test_slack_channel.py \
			tests/test_discord_channel.py tests/test_llm_streaming.py tests/test_console.py; \
	else echo "no Python 3.12 given (PY312): the streaming tests ran on one Python only"; fi

lint: $(STAMP)
	$(PY) -m ruff check flowagents adapters agents bot tests benchmarks
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(VENV)312 .pytest_cache .mypy_cache .ruff_cache

# Headless Chromium + driver for the playground browser test (Debian/Ubuntu; needs root). No-op when present.
install-browser: $(STAMP)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				chromium chromium-driver) || echo "warning: could not install chromium; the browser test will not pass"; \
		else \
			echo "note: not root, so chromium is not installed; the playground browser test is skipped (fails in CI)"; \
		fi; \
	fi
	@$(PY) -c "import selenium" 2>/dev/null || $(PY) -m pip install --quiet "selenium>=4.20"
