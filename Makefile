# The two commands of the README: `make demo` and `make test`. Each sets itself up first.
VENV := .venv/bin

.PHONY: setup demo test lint unit

setup:
	@bash hack/setup.sh

demo: setup
	$(VENV)/inferfleet demo $(DEMO_ARGS)

lint: setup
	$(VENV)/ruff check operator tests bench
	$(VENV)/ruff format --check operator tests bench
	$(VENV)/mypy
	$(VENV)/lint-imports

test: lint
	$(VENV)/python -m pytest $(PYTEST_ARGS)

unit: setup
	$(VENV)/python -m pytest -m unit $(PYTEST_ARGS)
