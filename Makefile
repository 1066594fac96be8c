# Every target sets up what it needs; `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3.11
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

.PHONY: help venv lock system-deps demo serve test test-fast bench lint docs docs-serve list verify package purge clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

# requirements*.txt are the pins people edit; `make lock` compiles them into the lock files, where
# every transitive dependency is pinned with the sha256 of each of its files on PyPI (all wheels of
# that version and the sdist), and pip installs nothing whose hash is not listed there.
# requirements-dev.lock holds the runtime set too, at the versions of requirements.lock.
LOCKS := requirements.lock requirements-dev.lock
LOCK_FLAGS := --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command "make lock"

$(VENV)/.installed: $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	touch $@

venv: $(VENV)/.installed  ## Create the virtualenv with the locked, hash-checked dependencies

lock: venv  ## Compile requirements*.txt into requirements*.lock (every dependency pinned and hashed; needs PyPI)
	$(BIN)/uv pip compile $(LOCK_FLAGS) requirements.txt -o requirements.lock
	$(BIN)/uv pip compile $(LOCK_FLAGS) requirements.txt requirements-dev.txt -o requirements-dev.lock

system-deps:  ## Install the Debian packages the tests need (chromium, promtool, postgresql, java, nginx, apache2, mod_wsgi) when missing (root)
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || ls $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "the tests need:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

demo: venv  ## Train and package the demo models unless artifacts exist
	$(BIN)/python -m service train-demo

# registry check before Gunicorn: models packaged with another DATABASE_URL (`make demo`, then
# `DATABASE_URL=postgresql://... make serve`) stop here with the `registry adopt` line to run, rather
# than starting workers that refuse them. Adopting them here would accept whatever is in artifacts/.
serve: demo  ## Serve on $HOST:$PORT (127.0.0.1:8000) with Gunicorn (first run prints the local admin key)
	@$(BIN)/python -m service config --quiet
	@$(BIN)/python -m service registry check
	@$(BIN)/python -m service keys ensure-local-admin
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:application

test: lint system-deps  ## Lint, then run the whole test suite (unit and end-to-end)
	$(BIN)/python -m pytest

test-fast: venv  ## Run the in-process tests only: no Gunicorn, no PostgreSQL (neither need be installed)
	$(BIN)/python -m pytest -m "not e2e and not postgres"

bench: venv  ## Compare this server, a naive Flask app and the bare floor under wrk (needs wrk; installs it as root; BENCH_ARGS=--quick; MODEL=<packaged model in ARTIFACTS_DIR>)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m bench $(if $(MODEL),--model '$(MODEL)') $(BENCH_ARGS)

# bandit reads the shipped code (tests run servers and use assert on purpose; ruff's S rules cover
# them, with the exceptions pyproject.toml justifies); a false positive is justified at its line.
BANDIT_TARGETS := service wsgi.py gunicorn.conf.py bench

# bandit 1.9 also warns "nosec encountered (B608), but no failed test" on f-strings whose finding the
# nosec did suppress (PyCQA/bandit#1204): those lines are dropped from its log, its verdict is kept.
lint: venv  ## Check the code with ruff (style and security rules) and bandit
	$(BIN)/ruff check .
	@echo "$(BIN)/bandit --quiet --configfile pyproject.toml --recursive $(BANDIT_TARGETS)"
	@$(BIN)/bandit --quiet --configfile pyproject.toml --recursive $(BANDIT_TARGETS) 2>$(VENV)/bandit.log; \
	status=$$?; grep -v 'but no failed test on file' $(VENV)/bandit.log >&2; exit $$status

# The documentation site (mkdocs.yml, docs/): strict, so a broken link, a missing page or a bad anchor
# fails the build; the settings, command-line and HTTP reference are generated from the code as it
# builds. `make test` builds it too (tests/test_docs.py). docs-serve uses 8001: 8000 is the server's.
DOCS_ENV := NO_MKDOCS_2_WARNING=1

docs: venv  ## Build the documentation site strictly into site/
	$(DOCS_ENV) $(BIN)/mkdocs build --strict --site-dir site

docs-serve: venv  ## Serve the documentation on http://127.0.0.1:8001, rebuilt as you edit it
	$(DOCS_ENV) $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8001

list: venv  ## List models, versions and labels
	$(BIN)/python -m service list

verify: venv  ## Verify the hashes of every artifact on disk
	$(BIN)/python -m service verify

package: venv  ## Package a model: make package MODEL=m.joblib NAME=churn DATA=holdout.csv TARGET=label [ARGS="--min accuracy=0.9"]
	$(BIN)/python -m service package --model $(MODEL) --name $(NAME) --data $(DATA) --target $(TARGET) $(ARGS)

purge: venv  ## Delete logged predictions older than RETENTION_DAYS (default 30)
	$(BIN)/python -m service purge

clean:  ## Remove the virtualenv, caches and runtime files (not artifacts)
	rm -rf $(VENV) .pytest_cache .ruff_cache var
