# The two commands of the README: `make demo` and `make test`. Each sets itself up first.
VENV := .venv/bin
include hack/versions.env
ACTIONLINT := $(or $(INFERFLEET_CACHE),.cache)/bin/actionlint-v$(ACTIONLINT_VERSION)/actionlint

.PHONY: setup demo test lint unit karpenter bench-nodescale

setup:
	@bash hack/setup.sh

demo: setup
	$(VENV)/inferfleet demo $(DEMO_ARGS)

lint: setup
	$(VENV)/ruff check operator tests bench
	$(VENV)/ruff format --check operator tests bench
	$(VENV)/mypy
	$(VENV)/lint-imports
	shellcheck -x -P hack hack/*.sh .ci/run
	$(ACTIONLINT) -color=false

test: lint
	$(VENV)/python -m pytest $(PYTEST_ARGS)

unit: setup
	$(VENV)/python -m pytest -m unit $(PYTEST_ARGS)

# Optional: only bench/nodescale needs Karpenter's KWOK provider (built from the Go module proxy).
karpenter:
	@bash hack/build-karpenter.sh

bench-nodescale: setup karpenter
	$(VENV)/python -m bench.nodescale
