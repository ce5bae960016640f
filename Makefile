# make demo | make test | make bench: each creates or reuses .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench venv clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || sh scripts/system-deps.sh venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	@sh scripts/system-deps.sh demo
	$(PY) -m scripts.demo

test: $(STAMP)
	@sh scripts/system-deps.sh test
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	@sh scripts/system-deps.sh bench
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .demo .bench
