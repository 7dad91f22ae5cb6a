# callbridge: the two commands a newcomer needs (see README.md).
PYTHON ?= python3
VENV ?= .venv

.PHONY: demo test fuzz serve venv lint lock clean

$(VENV)/.installed: pyproject.toml requirements.lock
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh

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

## make fuzz: the OpenAPI fuzz run alone, for longer (make test runs it for 60 s per database)
fuzz:
	CALLBRIDGE_FUZZ_SECONDS=$${CALLBRIDGE_FUZZ_SECONDS:-600} LINT=0 bash scripts/test.sh tests/fuzz

## make lock: refresh requirements.lock (exact, hashed versions) from the ranges in pyproject.toml
lock:
	test -x $(VENV)/bin/uv || PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	$(VENV)/bin/uv pip compile --quiet --universal --generate-hashes --python-version 3.11 \
		--extra dev pyproject.toml requirements-build.in -o requirements.lock
	$(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu requirements-salt.in -o requirements-salt.lock

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
