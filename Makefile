PYTHON ?= python3

.PHONY: run test deps lint bench

# Install tarry and run it with its embedded defaults.
run:
	$(PYTHON) -m pip install -q --disable-pip-version-check ".[all]"
	tarry serve

# Install everything the tests need (Debian clients, Python packages), then run them.
test: deps
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

deps:
	./scripts/install-test-deps.sh

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

bench:
	$(PYTHON) bench/run.py -n 10000 --window 60
