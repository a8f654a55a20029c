# clawgate — `make run` starts the gateway, `make test` runs every test, `make bench` measures.
# Each target creates .venv by itself with a Python 3.12+ found on PATH or through pyenv.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

# First Python >= 3.12 on PATH, then any pyenv-installed 3.12+/3.13+ (newest first).
define FIND_PYTHON
for c in python3.13 python3.12 python3 python; do \
  p=$$(command -v $$c 2>/dev/null) || continue; \
  $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; exit 0; }; \
done; \
if command -v pyenv >/dev/null 2>&1; then \
  for v in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])(\.|$$)' | sort -t. -k1,1nr -k2,2nr -k3,3nr); do \
    p=$$(PYENV_VERSION=$$v pyenv which python3 2>/dev/null) && [ -x "$$p" ] && { echo $$p; exit 0; }; \
  done; \
fi; exit 1
endef

.PHONY: run test bench load fuzz lint typecheck image venv clean

$(BIN)/.installed: pyproject.toml
	@py=$$( $(FIND_PYTHON) ) || { \
	  echo "clawgate needs Python 3.12 or newer and none was found on PATH or in pyenv." >&2; \
	  echo "Install one, e.g. 'apt-get install python3.12' / 'brew install python@3.12' / 'pyenv install 3.12'." >&2; \
	  exit 1; }; \
	echo "using $$py ($$($$py --version))"; \
	$$py -m venv $(VENV) && $(BIN)/pip install -q --upgrade pip && $(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

image: venv
	@img=$$($(BIN)/python -c 'from core.config import load; print(load().sandbox.image)') || exit 1; \
	docker image inspect "$$img" >/dev/null 2>&1 || $(BIN)/clawgate image build

run: venv image
	$(BIN)/clawgate run

# The tests mostly wait (containers, processes, timeouts), so they run in parallel pytest-xdist
# workers, each test file on one worker (`--dist loadfile`: a file's module fixtures are
# built once), the slowest suites handed out first (tests/conftest.py, SLOW_SUITES_FIRST).
# Serially, e.g. to debug: `make test TEST_WORKERS=0`; one file or test:
# `make test TEST_WORKERS=0 PYTEST_ARGS=tests/vault/test_vault_e2e.py`.
TEST_WORKERS ?= 4
PYTEST_ARGS ?=

test: venv
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

bench: venv
	@$(BIN)/python -m benchmarks.run

load: venv
	@$(BIN)/python -m benchmarks.load

# The hostile-input fuzzers (tests/fuzz). Bounded as in CI by default;
# `CLAWGATE_FUZZ_SECONDS=600 make fuzz` shares 600 s of random examples among the targets.
fuzz: venv
	$(BIN)/pytest -q -p no:cacheprovider tests/fuzz

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy over the packages and with the profiles in pyproject.toml [tool.mypy]; any error fails.
typecheck: venv
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
