# callbridge: the two commands a newcomer needs (see README.md).
PYTHON ?= python3
VENV ?= .venv

.PHONY: demo test serve venv lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## make demo: install into .venv and start the hub with embedded defaults on http://127.0.0.1:8000
demo: venv
	$(VENV)/bin/callbridge demo

## make serve: start the hub without demo data
serve: venv
	$(VENV)/bin/callbridge serve

## make test: install what is missing, start throwaway PostgreSQL and Redis, run every check and test
test:
	bash scripts/test.sh

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
