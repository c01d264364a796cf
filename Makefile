# The two entry points of the README. Both work on a fresh machine with python3 (3.11).
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: setup serve test lint servers audit image image-run

$(STAMP): pyproject.toml requirements.txt requirements-jobs.txt constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Trains a demo model on synthetic data if the store (bentos/) has none, then serves :3000.
serve: setup
	$(VENV)/bin/churn serve --port 3000

# The tests start real redis-server, PostgreSQL, Prometheus and Alertmanager processes from
# their binaries (and run promtool and amtool, which come with the last two).
servers:
	@if ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
	  || ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
	  echo "installing redis-server, postgresql, prometheus and prometheus-alertmanager (Debian packages) for the tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server postgresql prometheus prometheus-alertmanager >/dev/null; \
	fi

test: setup servers
	$(VENV)/bin/pytest

# Known vulnerabilities in the locked dependencies (needs PyPI's JSON API).
audit: setup
	$(VENV)/bin/pip-audit -r constraints.txt --progress-spinner off

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy core training serving monitoring lifecycle batch launchers loadtests benchmarks service.py cli.py && $(VENV)/bin/lint-imports

# The service's container image with Podman (installed if missing): the base image once,
# a demo model if the store has none, the Bento, `bentoml containerize` (deploy/image.sh).
image: setup
	deploy/image.sh build

# Serves the image on :3000 (host network); settings and secrets: README "Container image".
image-run:
	deploy/image.sh run

