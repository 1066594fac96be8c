# Every target sets up what it needs; `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
ARTIFACTS_DIR ?= artifacts
export ARTIFACTS_DIR

# Debian packages the tests drive for real: headless Chromium (monitoring page), promtool
# (Prometheus' checker, in the prometheus package), a PostgreSQL server (shared store), and for
# tests/deploy Nginx, Apache with mod_wsgi, and systemd's unit checker and socket activation.
SYSTEM_TOOLS := chromium:chromium promtool:prometheus /usr/lib/postgresql/*/bin/postgres:postgresql nginx:nginx \
	apache2:apache2 /usr/lib/apache2/modules/mod_wsgi.so:libapache2-mod-wsgi-py3 systemd-socket-activate:systemd

.PHONY: help venv system-deps demo serve test test-fast bench lint list verify package purge clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed  ## Create the virtualenv with pinned dependencies

system-deps:  ## Install the Debian packages the tests need (chromium, promtool, postgresql, nginx, apache2, mod_wsgi) when missing (root)
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v $${pair%%:*} >/dev/null || ls $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "the tests need:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

demo: venv  ## Train and package the demo models unless artifacts exist
	$(BIN)/python -m service train-demo

serve: demo  ## Serve on $HOST:$PORT (127.0.0.1:8000) with Gunicorn (first run prints the local admin key)
	@$(BIN)/python -m service config --quiet
	@$(BIN)/python -m service keys ensure-local-admin
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:application

test: venv system-deps  ## Run the whole test suite (unit and end-to-end)
	$(BIN)/python -m pytest

test-fast: venv  ## Run the in-process tests only: no Gunicorn, no PostgreSQL (neither need be installed)
	$(BIN)/python -m pytest -m "not e2e and not postgres"

bench: venv  ## Compare this server, a naive Flask app and the bare floor under wrk (needs wrk; installs it as root; BENCH_ARGS=--quick; MODEL=<packaged model in ARTIFACTS_DIR>)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m bench $(if $(MODEL),--model '$(MODEL)') $(BENCH_ARGS)

lint:  venv  ## Check the code with ruff
	$(BIN)/ruff check .

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
