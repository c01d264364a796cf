# The two entry points of the README. Both work on a fresh machine with python3 (3.11).
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: setup serve test lint

$(STAMP): pyproject.toml requirements.txt constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Trains a demo model on synthetic data if the store (bentos/) has none, then serves :3000.
serve: setup
	$(VENV)/bin/churn serve --port 3000

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy training service.py
