# The README's two commands are `make demo` and `make test`; each sets itself up.
# `make unit` is the quick loop: no cluster, no Go-built binaries, no lint.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test unit demo lint bench-start bench-proxy bench-operator bench-dataplane bench-streams soak binaries generate cluster-up cluster-down clean

$(STAMP): pyproject.toml
	@echo "make: setting up $(VENV): a virtualenv with llmgw and its proxy, operator and dev dependencies"
	@echo "make: (pip install -e '.[proxy,operator,dev]', about a minute; redone only when pyproject.toml changes)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e '.[proxy,operator,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

binaries: $(STAMP)
	$(VENV)/bin/llmgw-dev binaries build

# pytest exits 5 when it collected nothing; for this suite that means the
# selection broke, so it fails with a message instead of passing silently.
define pytest
	@$(PY) -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make $@: pytest collected no tests" >&2; exit 1; fi; exit $$rc
endef

test: $(STAMP) binaries lint
	$(call pytest,$(PYTEST_ARGS))

# Everything that runs without a control plane or the pinned binaries (the
# `binaries` marker, which tests/conftest.py puts on users of helm, kubeconform
# and the cluster), and without the slow tests that build venvs or run a load.
UNIT_MARKERS := not cluster and not binaries and not slow

unit: $(STAMP)
	$(call pytest,-m '$(UNIT_MARKERS)' $(PYTEST_ARGS))

# mypy checks tests/ with the settings of [tool.mypy], one run per folder that pytest imports as
# a root of its own (each folder without __init__.py, with its packages, like tests/proxy/policies):
# there `import renderkit` names a sibling file, and several folders hold a module named
# `conftest`, which a single mypy run would refuse as one duplicated module. tests/ comes second
# on the path for tests/clusterkit.py, as pytest's root conftest puts it on sys.path.
TEST_ROOTS = $(sort $(foreach d,$(sort $(dir $(shell find tests -name '*.py'))),$(if $(wildcard $(d)__init__.py),,$(d:/=))))

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@set -e; for root in $(TEST_ROOTS); do \
		echo "mypy $$root"; \
		MYPYPATH=$$root:tests $(VENV)/bin/mypy $$root/*.py $$(for i in $$root/*/__init__.py; do \
			[ ! -e $$i ] || dirname $$i; done); \
	done
	$(VENV)/bin/lint-imports

# A local control plane on loopback that outlives make; `eval "$$(.venv/bin/llmgw-dev env)"`
# then puts kubectl and helm on PATH and points KUBECONFIG at it.
CLUSTER ?= $(or $(LLMGW_CLUSTER),llmgw)

cluster-up: $(STAMP) binaries
	$(VENV)/bin/llmgw-dev cluster up --name $(CLUSTER)
	@echo 'make: cluster $(CLUSTER) is up; for kubectl, helm and KUBECONFIG: eval "$$($(VENV)/bin/llmgw-dev env --name $(CLUSTER))"'

cluster-down: $(STAMP)
	$(VENV)/bin/llmgw-dev cluster down --name $(CLUSTER)

demo: $(STAMP) binaries
	$(VENV)/bin/llmgw-dev demo

generate: $(STAMP)
	$(VENV)/bin/llmgw-dev generate

# The socket benchmark, then the policies' cost counted in instructions (steady on a shared machine),
# then global limits in a local redis-server against the in-memory ones.
bench-proxy: $(STAMP)
	$(PY) -m llmgw_dev.bench_proxy $(BENCH_ARGS)
	$(PY) -m llmgw_dev.bench_policies
	$(PY) -m llmgw_dev.bench_redis $(BENCH_ARGS)

# The sidecar's start to /readyz and idle RSS, this tree beside BASELINE (a git revision, main by default).
bench-start: $(STAMP)
	$(PY) -m llmgw_dev.bench_start $(if $(BASELINE),--baseline $(BASELINE))

bench-operator: $(STAMP) binaries
	$(PY) -m llmgw_dev.bench_operator $(BENCH_ARGS)

# The data-plane poller against 1,000 loopback /status servers: time per round, CPU, memory.
bench-dataplane: $(STAMP)
	$(PY) -m llmgw_dev.bench_dataplane $(BENCH_ARGS)

# Upstream 5xx, resets, stalls and mid-stream cuts mixed, through a real sidecar for 10 minutes:
# requests by outcome, overshoot past the deadline, RSS growth (`make test` runs 60 s of it);
# then the config rewritten every 100 ms for 60 s under load (`make test`: 12 s).
SOAK_SECONDS ?= 600
soak: $(STAMP)
	$(PY) -m llmgw_dev.soak --duration $(SOAK_SECONDS)
	$(PY) -m llmgw_dev.reload_load --duration 60

# 2,000 concurrent long-lived streams straight to a fake provider, then through one sidecar.
bench-streams: $(STAMP)
	$(PY) -m llmgw_dev.bench_concurrent_streams $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
