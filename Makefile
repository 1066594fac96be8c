# Every target sets up what it needs; `make serve` and `make test` work on a fresh clone.
# PYTHON: the interpreter the virtualenv is made with; unset, the first of PYTHONS that is CPython
# 3.11, 3.12 or 3.13 (the versions the locks are resolved and tested for). Another Python alongside:
# make test-fast PYTHON=python3.13 VENV=.venv-3.13
PYTHONS := python3 python3.13 python3.12 python3.11
SUPPORTED_PYTHON := import sys; sys.exit(sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13))
VENV ?= .venv
BIN := $(VENV)/bin
ARTIFACTS_DIR ?= artifacts
export ARTIFACTS_DIR

# Debian packages the tests drive for real: headless Chromium (monitoring page), promtool
# (Prometheus' checker, in the prometheus package), a PostgreSQL server (shared store), a Java
# runtime (PMML conversion and its evaluator), and for tests/deploy Nginx, Apache with mod_wsgi,
# and systemd's unit checker and socket activation.
SYSTEM_TOOLS := chromium:chromium promtool:prometheus /usr/lib/postgresql/*/bin/postgres:postgresql java:default-jre-headless \
	nginx:nginx apache2:apache2 /usr/lib/apache2/modules/mod_wsgi.so:libapache2-mod-wsgi-py3 systemd-socket-activate:systemd

.PHONY: help venv batch dev-venv lock system-deps demo serve wheel test test-fast bench lint docs docs-serve list verify package purge clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

# requirements*.txt are the pins people edit; `make lock` compiles them into the lock files, where
# every transitive dependency is pinned with the sha256 of each of its files on PyPI (all wheels of
# that version and the sdist), and nothing is installed whose hash is not listed there.
# requirements-dev.lock holds the runtime set too, at the versions of requirements.lock, and batch
# scoring's pyarrow (requirements-batch.txt, which `make batch` installs from it).
# One pair of locks serves every supported Python: they are resolved for 3.11, and `make lock` fails
# when 3.12 or 3.13 would resolve to anything else (the hashes cover every wheel of each version).
LOCKS := requirements.lock requirements-dev.lock
LOCK_PYTHON := 3.11
LOCK_ALSO_FOR := 3.12 3.13
LOCK_FLAGS := --quiet --generate-hashes --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock"

# The runtime set (requirements.lock, what the image installs) is all `make serve` and the model
# commands need; `make test`, `lint`, `bench` and `lock` add the dev set on top of it, in the same
# virtualenv (the dev lock holds the runtime set at the same versions and hashes).
RUNTIME := $(VENV)/.runtime
DEV := $(VENV)/.installed
BATCH := $(VENV)/.batch
UV := $(BIN)/uv

$(BIN)/python:
	@python='$(PYTHON)'; if [ -z "$$python" ]; then for candidate in $(PYTHONS); do \
	  $$candidate -c '$(SUPPORTED_PYTHON)' 2>/dev/null && { python=$$candidate; break; }; done; \
	elif ! $$python -c '$(SUPPORTED_PYTHON)' 2>/dev/null; then python=; fi; \
	if [ -z "$$python" ]; then echo "make needs CPython 3.11, 3.12 or 3.13 and $(if $(PYTHON),PYTHON=$(PYTHON) is not one that runs,none of $(PYTHONS) is one that runs): install one (e.g. apt-get install python3 python3-venv) or name it: make $(or $(MAKECMDGOALS),venv) PYTHON=/path/to/python3.12" >&2; exit 1; fi; \
	echo "$$python -m venv $(VENV)  (Python $$($$python -c 'import platform; print(platform.python_version())'))"; \
	$$python -m venv $(VENV)

# uv installs the locks: pip fetches one file at a time (93 s for the runtime lock on a fresh machine,
# 9 s with uv, same hashes checked). uv itself comes first, with pip, exactly as the dev lock pins and
# hashes it (its entry copied out to $(VENV)/uv.lock).
$(UV): requirements-dev.lock | $(BIN)/python
	@awk '/^uv==/ {keep = 1; print; next} keep && /^ / {print; next} {keep = 0}' requirements-dev.lock > $(VENV)/uv.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r $(VENV)/uv.lock
	@touch $@

$(RUNTIME): requirements.lock | $(UV)
	$(UV) pip install --quiet --python $(BIN)/python --require-hashes -r requirements.lock
	touch $@

# Batch scoring's pyarrow (requirements-batch.txt) is outside the runtime set; `make batch` installs
# it exactly as the dev lock pins and hashes it (it needs nothing else), like uv above.
$(BATCH): requirements-dev.lock | $(RUNTIME)
	@awk '/^pyarrow==/ {keep = 1; print; next} keep && /^ / {print; next} {keep = 0}' requirements-dev.lock > $(VENV)/batch.lock
	$(UV) pip install --quiet --python $(BIN)/python --require-hashes -r $(VENV)/batch.lock
	@touch $@

# The dev set is compiled to bytecode once, here (--compile-bytecode): a Python that may not write
# bytecode (PYTHONDONTWRITEBYTECODE=1, common on CI machines) otherwise compiles scikit-learn, SciPy and
# pandas again in every process it starts, 9-11 s instead of 2 s to import the server on a loaded
# 2-core machine, paid by each of the suite's servers and commands. The runtime set is not: Python
# writes the bytecode of what `make serve` imports on its first start, and the virtualenv stays
# smaller (673 against 821 MB).
$(DEV): $(LOCKS) | $(UV)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python --require-hashes -r requirements-dev.lock
	touch $@ $(RUNTIME) $(BATCH)

venv: $(RUNTIME)  ## Create the virtualenv with the runtime dependencies only (locked, hash-checked)
batch: $(BATCH)  ## Add pyarrow to the virtualenv, for batch scoring (python -m service score)
dev-venv: $(DEV)  ## Add the test, lint and bench dependencies to it (make test does)

lock: $(DEV)  ## Compile requirements*.txt into requirements*.lock (every dependency pinned and hashed; needs PyPI)
	$(BIN)/uv pip compile $(LOCK_FLAGS) --python-version $(LOCK_PYTHON) requirements.txt -o requirements.lock
	$(BIN)/uv pip compile $(LOCK_FLAGS) --python-version $(LOCK_PYTHON) requirements.txt requirements-batch.txt requirements-dev.txt -o requirements-dev.lock
	@for version in $(LOCK_ALSO_FOR); do \
	  $(BIN)/uv pip compile $(LOCK_FLAGS) --python-version $$version requirements.txt --output-file $(VENV)/requirements-$$version.lock && \
	  $(BIN)/uv pip compile $(LOCK_FLAGS) --python-version $$version requirements.txt requirements-batch.txt requirements-dev.txt \
	    --output-file $(VENV)/requirements-dev-$$version.lock || exit 1; \
	  for lock in requirements requirements-dev; do \
	    grep -v '^ *#' $$lock.lock > $(VENV)/pins.txt; grep -v '^ *#' $(VENV)/$$lock-$$version.lock > $(VENV)/pins-$$version.txt; \
	    cmp -s $(VENV)/pins.txt $(VENV)/pins-$$version.txt || { echo "Python $$version resolves $$lock.txt to other pins or hashes than \
	      $(LOCK_PYTHON) (diff $$lock.lock $(VENV)/$$lock-$$version.lock): pin the package there so one lock fits all" >&2; exit 1; }; \
	  done; \
	done; echo "the locks resolve to the same pins and hashes for Python $(LOCK_PYTHON) and $(LOCK_ALSO_FOR)"

system-deps:  ## Install the Debian packages the tests need (chromium, promtool, postgresql, java, nginx, apache2, mod_wsgi) when missing (root)
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || ls $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "the tests need:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

demo: $(RUNTIME)  ## Train and package the demo models unless artifacts exist
	$(BIN)/python -m service train-demo

# `serve` checks the configuration and each registry.json against the audit trail (models packaged
# with another DATABASE_URL stop there with the `registry adopt` line to run), makes the local admin
# key once, then becomes Gunicorn with gunicorn.conf.py: the same command the installed package has.
serve: demo  ## Serve on $HOST:$PORT (127.0.0.1:8000) with Gunicorn (first run prints the local admin key)
	$(BIN)/python -m service serve

# The installable package (pyproject.toml), built with the pinned hatchling and nothing fetched.
wheel: $(DEV)  ## Build the package into dist/ (pip install it for the sklearn-server command)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

# The suite runs in TEST_WORKERS processes (pytest-xdist): much of a test's time is spent waiting on the
# servers it starts (Gunicorn, PostgreSQL, Nginx, Chromium), so a second worker uses that time. Two, one per
# core: more crowd the servers' start-up deadlines on a two-core machine. --dist loadfile keeps each module in
# one worker, so a module-scoped server starts once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile

test: lint wheel system-deps  ## Lint, build the wheel, then run the whole test suite (unit and end-to-end) in TEST_WORKERS processes (2)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

test-fast: $(DEV)  ## Run the in-process tests only: no Gunicorn, no PostgreSQL (neither need be installed)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not e2e and not postgres"

bench: $(DEV)  ## Compare this server, a naive Flask app and the bare floor under wrk, then batch scoring against MLflow (needs wrk; installs it as root; BENCH_ARGS=--quick; MODEL=<packaged model in ARTIFACTS_DIR>)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m bench $(if $(MODEL),--model '$(MODEL)') $(BENCH_ARGS)
	$(BIN)/python -m bench.batch $(filter --quick,$(BENCH_ARGS))

# bandit reads the shipped code (tests run servers and use assert on purpose; ruff's S rules cover
# them, with the exceptions pyproject.toml justifies); a false positive is justified at its line.
BANDIT_TARGETS := service wsgi.py gunicorn.conf.py bench

# bandit 1.9 also warns "nosec encountered (B608), but no failed test" on f-strings whose finding the
# nosec did suppress (PyCQA/bandit#1204): those lines are dropped from its log, its verdict is kept.
lint: $(DEV)  ## Check the code with ruff (style and security rules) and bandit
	$(BIN)/ruff check .
	@echo "$(BIN)/bandit --quiet --configfile pyproject.toml --recursive $(BANDIT_TARGETS)"
	@$(BIN)/bandit --quiet --configfile pyproject.toml --recursive $(BANDIT_TARGETS) 2>$(VENV)/bandit.log; \
	status=$$?; grep -v 'but no failed test on file' $(VENV)/bandit.log >&2; exit $$status

# The documentation site (mkdocs.yml, docs/): strict, so a broken link, a missing page or a bad anchor
# fails the build; the settings, command-line and HTTP reference are generated from the code as it
# builds. `make test` builds it too (tests/test_docs.py). docs-serve uses 8001: 8000 is the server's.
DOCS_ENV := NO_MKDOCS_2_WARNING=1

docs: $(DEV)  ## Build the documentation site strictly into site/
	$(DOCS_ENV) $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(DEV)  ## Serve the documentation on http://127.0.0.1:8001, rebuilt as you edit it
	$(DOCS_ENV) $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8001

list: $(RUNTIME)  ## List models, versions and labels
	$(BIN)/python -m service list

verify: $(RUNTIME)  ## Verify the hashes of every artifact on disk
	$(BIN)/python -m service verify

package: $(RUNTIME)  ## Package a model: make package MODEL=m.joblib NAME=churn DATA=holdout.csv TARGET=label [ARGS="--min accuracy=0.9"]
	$(BIN)/python -m service package --model $(MODEL) --name $(NAME) --data $(DATA) --target $(TARGET) $(ARGS)

purge: $(RUNTIME)  ## Delete logged predictions older than RETENTION_DAYS (default 30)
	$(BIN)/python -m service purge

clean:  ## Remove the virtualenv, caches and runtime files (not artifacts)
	rm -rf $(VENV) .pytest_cache .ruff_cache var dist
