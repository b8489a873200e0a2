# Everything runs from a project-local virtual environment (.venv), created
# on first use, so `make test` / `make demo` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo clean

venv: $(STAMP)

# The stamp is rebuilt only when setup.py changes, so re-runs are fast.
$(STAMP): setup.py
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -e ".[test]"
	touch $(STAMP)

test: venv
	OMP_NUM_THREADS=1 $(VPY) -m pytest -q tests

# lvae, naive, ewc and gr on 5-task permuted MNIST, 2 epochs each.
demo: venv
	$(VENV)/bin/avalanche-lvae run split_mnist

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
