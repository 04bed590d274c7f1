# Two entry points for a fresh machine: `make serve` runs calrelay, `make test` runs the checks.
# Both create the virtualenv .venv on first use (Python >= 3.11 with venv and pip is all they need).

VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: serve test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/calrelay serve

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
