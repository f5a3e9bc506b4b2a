# codex-session-migration: the scripts need only python3 (3.9+); the tests need pytest and,
# for the end-to-end tests, the pinned real Codex CLI, which `make test` installs itself.
PYTHON ?= python3
# The end-to-end suite runs on CODEX_VERSION; its `compat` subset on CODEX_COMPAT_VERSIONS too;
# CODEX_OLD_VERSIONS make the homes of tests/test_e2e_old_homes.py (older homes keep working)
# (tests/codex_client.py holds the same three lists; a test checks they agree).
CODEX_VERSION := 0.171.0
CODEX_COMPAT_VERSIONS := 0.169.0
CODEX_OLD_VERSIONS := 0.130.0 0.148.0 0.160.0
PYTEST_ARGS ?=

.PHONY: help install test test-unit deps codex-cli demo audit bench vermin clean

help:
	@echo "make install   copy the skill (SKILL.md, agents/, scripts/, references/) to INSTALL_DIR, compiled"
	@echo "               (default ~/.agents/skills/codex-session-migration)"
	@echo "make audit     audit your Codex home (\$$CODEX_HOME or ~/.codex); read-only"
	@echo "make demo      build a broken sample home (DEMO_DIR, default a new temp folder), audit it,"
	@echo "               and print the commands to try the repair and the rollback on it"
	@echo "make test      install test needs (pytest, hypothesis, pytest-xdist, Codex CLI $(CODEX_VERSION), $(CODEX_COMPAT_VERSIONS)"
	@echo "               and the older $(CODEX_OLD_VERSIONS): 1.8 GB) and run every test, in parallel"
	@echo "               (TEST_JOBS=N workers; default one per core)"
	@echo "make test-unit the tests that need no Codex CLI (-m 'not e2e'), in parallel"
	@echo "make bench     time every script on generated homes beside its own floor; exit 1 and one line"
	@echo "               per target missed (homes up to 100,000 threads, 3.3 GB in BENCH_DIR; BENCH_MAX=10000"
	@echo "               to cap; BENCH_RUNS=3 runs per step, BENCH_RUNS_LARGE=1 at 100,000)"

# pytest and hypothesis in .venv (system packages visible, so nothing is fetched when they are
# already installed); where venv is unavailable, the interpreter itself, installing with --user.
TEST_PACKAGES := pytest hypothesis pytest-xdist
VENV := .venv
TEST_PY = $(shell [ -x $(VENV)/bin/python ] && echo $(VENV)/bin/python || echo $(PYTHON))

deps:
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv --system-site-packages $(VENV) 2>/dev/null || \
	  echo "python3 -m venv is unavailable; installing test tools for $(PYTHON) instead"
	@PY=$$([ -x $(VENV)/bin/python ] && echo $(VENV)/bin/python || echo $(PYTHON)); \
	  $$PY -c "import pytest, hypothesis, xdist" \
	    2>/dev/null || \
	  $$PY -m pip install --quiet --disable-pip-version-check $(TEST_PACKAGES) || \
	  $$PY -m pip install --quiet --disable-pip-version-check --user $(TEST_PACKAGES)

# The real clients for the end-to-end tests, pinned, each into .codex-cli/<version>/ (ignored);
# a folder is reused when its package says that version. tmux drives the TUI tests.
codex-cli:
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "npm not found: the end-to-end tests against the real Codex CLI will be skipped"; \
	else for v in $(CODEX_VERSION) $(CODEX_COMPAT_VERSIONS) $(CODEX_OLD_VERSIONS); do \
	  if [ -x .codex-cli/$$v/node_modules/.bin/codex ] && [ "$$(cat .codex-cli/$$v/node_modules/@openai/codex/package.json 2>/dev/null | \
	      $(PYTHON) -c 'import json,sys; print(json.load(sys.stdin)["version"])' 2>/dev/null)" = "$$v" ]; then \
	    true; \
	  else \
	    mkdir -p .codex-cli/$$v && \
	    npm install --prefix .codex-cli/$$v --no-audit --no-fund --loglevel=error @openai/codex@$$v || exit 1; \
	  fi; \
	done; fi
	@command -v tmux >/dev/null 2>&1 || echo "tmux not found: the TUI tests will be skipped (apt-get install tmux)"

# In parallel (pytest-xdist): TEST_JOBS workers (default one per core; 0: all in this process). Tests
# marked xdist_group share one worker (the TUI tests: tests/conftest.py), so they run one at a time.
TEST_JOBS ?= auto
PARALLEL = -n $(TEST_JOBS) --dist loadgroup

test: deps codex-cli
	$(TEST_PY) -m pytest $(PARALLEL) $(PYTEST_ARGS)

test-unit: deps
	$(TEST_PY) -m pytest -m "not e2e" $(PARALLEL) $(PYTEST_ARGS)

audit:
	$(PYTHON) scripts/session_audit.py

demo:
	@$(PYTHON) tests/demo.py "$(DEMO_DIR)"

# The skill bundle only: never the tests' tools (.venv, .codex-cli), tests, bench, .git or caches.
INSTALL_DIR ?= $(HOME)/.agents/skills/codex-session-migration
BUNDLE := SKILL.md agents scripts references

install:
	@[ -n "$(INSTALL_DIR)" ] || { echo "INSTALL_DIR is empty"; exit 2; }
	@mkdir -p "$(INSTALL_DIR)"
	@if [ "$$(cd "$(INSTALL_DIR)" && pwd -P)" = "$$(pwd -P)" ]; then \
	  echo "INSTALL_DIR is this source folder; nothing to copy"; exit 2; fi
	@for item in $(BUNDLE); do rm -rf "$(INSTALL_DIR)/$$item"; done
	@tar -cf - --exclude=__pycache__ --exclude='*.pyc' $(BUNDLE) | tar -xf - -C "$(INSTALL_DIR)"
	@# compiled now, once: the scripts set dont_write_bytecode (they may live inside $$CODEX_HOME) and
	@# would otherwise compile every module on every run; checked-hash stays valid after a copy
	@$(PYTHON) -m compileall -q --invalidation-mode checked-hash "$(INSTALL_DIR)/scripts"
	@$(PYTHON) -c "$$INSTALL_HINT" "$(INSTALL_DIR)" "$$(command -v $(PYTHON))" "$(INSTALL_DIR)/scripts/session_audit.py"

# What install prints last; a reader that stops early (`make install | head -1`) ends it quietly,
# as any Unix tool: the install is done, only the hint is cut.
define INSTALL_HINT
import os, shlex, sys
try:
    print(f"installed the skill into {sys.argv[1]}; audit your Codex home with:")
    print("  " + " ".join(shlex.quote(a) for a in sys.argv[2:]), flush=True)
except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
endef
export INSTALL_HINT

bench:
	$(PYTHON) bench/bench.py

vermin: deps
	@$(TEST_PY) -c "import vermin" 2>/dev/null || $(TEST_PY) -m pip install --quiet --disable-pip-version-check vermin
	$(TEST_PY) -c "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())" \
	  --no-tips --eval-annotations --target=3.9- --violations scripts/

clean:
	rm -rf .pytest_cache .e2e-tmp bench/homes $(VENV)
