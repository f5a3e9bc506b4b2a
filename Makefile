# codex-session-migration: the scripts need only python3 (3.9+); the tests need pytest and,
# for the end-to-end tests, the pinned real Codex CLI, which `make test` installs itself.
PYTHON ?= python3
CODEX_VERSION := 0.169.0
CODEX_CLI := .codex-cli/node_modules/.bin/codex
PYTEST_ARGS ?=

.PHONY: help test test-unit deps codex-cli demo audit bench vermin clean

help:
	@echo "make audit     audit your Codex home (\$$CODEX_HOME or ~/.codex); read-only"
	@echo "make demo      build a broken sample home in a temp folder and audit it"
	@echo "make test      install test needs (pytest, hypothesis, Codex CLI $(CODEX_VERSION)) and run every test"
	@echo "make bench     time every script on generated homes (BENCH_MAX=10000 to cap)"

deps:
	@$(PYTHON) -c "import pytest, hypothesis" 2>/dev/null || \
	  $(PYTHON) -m pip install --quiet --disable-pip-version-check pytest hypothesis

# The real client for the end-to-end tests, pinned, into an ignored folder; reused once there.
codex-cli:
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "npm not found: the end-to-end tests against the real Codex CLI will be skipped"; \
	elif [ -x $(CODEX_CLI) ] && CODEX_HOME=$$(mktemp -d) $(CODEX_CLI) --version 2>/dev/null | grep -q "$(CODEX_VERSION)"; then \
	  true; \
	else \
	  mkdir -p .codex-cli && \
	  npm install --prefix .codex-cli --no-audit --no-fund --loglevel=error @openai/codex@$(CODEX_VERSION); \
	fi

test: deps codex-cli
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-unit: deps
	$(PYTHON) -m pytest -m "not e2e" $(PYTEST_ARGS)

audit:
	$(PYTHON) scripts/session_audit.py

demo:
	$(PYTHON) tests/demo.py

bench:
	$(PYTHON) bench/bench.py

vermin:
	@$(PYTHON) -c "import vermin" 2>/dev/null || $(PYTHON) -m pip install --quiet --disable-pip-version-check vermin
	$(PYTHON) -c "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())" \
	  --no-tips --eval-annotations --target=3.9- --violations scripts/

clean:
	rm -rf .pytest_cache .e2e-tmp bench/homes
