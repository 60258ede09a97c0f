# The README's two commands are `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test demo lint bench-proxy bench-operator binaries generate cluster-up cluster-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[proxy,operator,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

binaries: $(STAMP)
	$(VENV)/bin/llmgw-dev binaries build

# pytest exits 5 when it collected nothing; for this suite that means the
# selection broke, so it fails with a message instead of passing silently.
test: $(STAMP) binaries lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

demo: $(STAMP) binaries
	$(VENV)/bin/llmgw-dev demo

generate: $(STAMP)
	$(VENV)/bin/llmgw-dev generate

bench-proxy: $(STAMP)
	$(PY) -m llmgw_dev.bench_proxy $(BENCH_ARGS)

bench-operator: $(STAMP) binaries
	$(PY) -m llmgw_dev.bench_operator $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
