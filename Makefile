# Two commands on a fresh machine: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QUESTION ?= What is the capital of France?
# The suite mostly waits on sockets and timers: more workers than cores keeps both cores busy. A file's
# tests share a worker (loadfile), so its module-scoped servers and -X dev batches start once.
WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest --record-mode=none -n $(WORKERS) --dist loadfile

.PHONY: demo test lint dev ci bench bench-smoke soak clean

$(BIN)/pplx-labs: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,test-perplexity,lint]'
	touch $@

demo: $(BIN)/pplx-labs  ## stream an answer with sources from the offline emulator through an LCEL chain
	$(BIN)/pplx-labs ask --emulator "$(QUESTION)"

test: $(BIN)/pplx-labs  ## the whole suite, offline, against the emulator and the cassettes, in $(WORKERS) workers
	$(PYTEST)

lint: $(BIN)/pplx-labs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict langchain_pplx_labs benchmarks

dev: $(BIN)/pplx-labs  ## nox, uv, build and twine for the matrix in noxfile.py
	$(BIN)/python -m pip install --quiet -e '.[dev]'

ci:  ## what CI runs: make test, make lint, then the nox matrix
	bash .ci/run

bench: $(BIN)/pplx-labs
	$(BIN)/python -m benchmarks

bench-smoke: $(BIN)/pplx-labs  ## the benchmarks' quick mode under pytest (left out of `make test`)
	$(BIN)/python -m pytest --record-mode=none -m bench

soak: $(BIN)/pplx-labs
	$(BIN)/python -m benchmarks.soak

clean:
	rm -rf $(VENV) .nox .pytest_cache .mypy_cache .ruff_cache
