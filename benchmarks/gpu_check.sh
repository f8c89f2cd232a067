#!/usr/bin/env bash
# The GPU checks of issues #13 and #7 in one go, sized for one device call:
#   1. the CUDA tests of the step modes (tests/test_step_modes.py; the CPU ones run too),
#   2. the training benchmark's measurements 2-6 (library vs DataLoader loop, step modes vs ceilings, concurrent
#      runs per GPU for three model sizes, per-method wall time, paper-grid projection),
#   3. the Ballot device check (benchmarks/ballot_devices.py: engine on identical inputs, CPU-vs-CUDA masks of one
#      seed beside LTH's, Ballot's non-training share on the GPU),
#   4. benchmarks/decide.py's report: each target met or missed, and the GPU defaults its rules give (apply them
#      afterwards, on the development machine: python benchmarks/decide.py DIR --apply).
#
#   benchmarks/gpu_check.sh [OUTDIR]            # full: about 15-20 min on an H100 (estimate)
#   QUICK=1 benchmarks/gpu_check.sh [OUTDIR]    # shorter settings: about 6-8 min (estimate, not measured)
#   DEVICE=cpu QUICK=1 benchmarks/gpu_check.sh  # dry run of the script itself on a machine without a GPU
#   STAGES=bench,ballot benchmarks/gpu_check.sh # only some stages (tests, bench, ballot, decide), e.g. to finish
#                                               # after a time-out; each stage prints its wall time
#
# Stages run in order of importance for issue #13 (tests, bench, ballot, decide), so a time-out cuts the least
# needed. It runs with the project's .venv when there is one, else with `python3` (e.g. a GPU machine's own torch:
# it needs torch, torchvision, numpy, pandas, matplotlib, pillow, PyYAML and pytest, not nbval or papermill).
# pytest and PyYAML may be missing there and nothing can be installed: `make gpu-deps` puts them (wheels for
# Python 3.12) in .gpu_pydeps/, which the device call carries (carry=[".gpu_pydeps"]); this script puts it on
# PYTHONPATH after the checkout when it exists and python3 is used, and says in gpu.txt whether pytest and yaml
# import. Without pytest the tests stage says so in cuda_tests.txt (and decide.py keeps eager); without PyYAML the
# projection [6] is skipped and decide.py computes it afterwards.
# Everything printed is also written under OUTDIR (default outputs/bench): gpu.txt, cuda_tests.{txt,xml},
# issue13_cuda.{txt,json}, ballot_devices.{txt,json}, decide.txt. Quote gpu.txt (GPU name, torch version) with the
# numbers. QUICK=1 leaves out the CPU-only torch.compile test of the tests stage (about a minute of CPU
# compilation; `make test` runs it) and runs one voting epoch in ballot_devices.py's engine check.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-outputs/bench}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEVICE=${DEVICE:-cuda}
STAGES=",${STAGES:-tests,bench,ballot,decide},"
stage() { case "$STAGES" in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
T0=$SECONDS
done_stage() { echo "[gpu_check] $1 done after $((SECONDS - T0)) s" | tee -a "$OUT/gpu.txt"; }
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONUNBUFFERED=1 BALLOT_PROGRESS=none
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# pytest/PyYAML wheels for a bare GPU image (`make gpu-deps`), after the checkout; never into the project's .venv
case "$PY" in
  *.venv/*) ;;
  *) if [ -d .gpu_pydeps ]; then export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_pydeps"; fi ;;
esac
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1;
  $PY -c "import torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '|',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
  $PY - <<'PYEOF'
import sys
def found(name):
    try:
        mod = __import__(name)
    except Exception as e:  # noqa: BLE001
        return f"{name} MISSING ({type(e).__name__}: {e})"
    return f"{name} {getattr(mod, '__version__', '?')} ({mod.__file__})"
print(f"python {sys.version.split()[0]} ({sys.executable}) | " + " | ".join(found(m) for m in ("pytest", "yaml")))
PYEOF
} | if stage tests; then tee "$OUT/gpu.txt"; else tee -a "$OUT/gpu.txt"; fi  # a re-run of later stages appends
# -o addopts= : the project's pytest options name nbval, which a bare GPU image does not have.
# -rs lists each skip with its reason; cuda_tests.xml (JUnit) says which tests ran: decide.py requires the CUDA
# tests to have run, not been skipped.
if stage tests; then
  rm -f "$OUT/cuda_tests.xml"
  if $PY -c "import pytest" 2>/dev/null; then
    quick_k=()
    if [ "${QUICK:-0}" = 1 ]; then quick_k=(-k "not test_compiled_matches_eager"); fi  # CPU-only, ~1 min to compile
    $PY -m pytest -q -rs -p no:cacheprovider -o addopts= --junitxml="$OUT/cuda_tests.xml" \
        ${quick_k[@]+"${quick_k[@]}"} tests/test_step_modes.py > "$OUT/cuda_tests.txt" 2>&1
    tail -25 "$OUT/cuda_tests.txt"
  else
    echo "PYTEST MISSING: $PY has no pytest ($($PY -c 'import pytest' 2>&1 | tail -1)); no test ran. Run" \
         "'make gpu-deps' and carry .gpu_pydeps (benchmarks/README.md)." | tee "$OUT/cuda_tests.txt"
  fi
  done_stage tests
fi
if [ "${QUICK:-0}" = 1 ]; then
  # one voting epoch: the engine's per-epoch arithmetic and ranking are what differs between devices; a second
  # epoch only adds the same float64 sums
  ballot=(--engine-epochs 1 --epochs 10)
  extra=(--throughput-models cnn,resnet18 --n-images 20000 --repeats 2
         --ceiling-models cnn,resnet18,resnet50,vgg16_bn --ceiling-steps 100
         --concurrent-models cnn,resnet18,resnet50 --runs-per-gpu 1,2,4 --concurrent-steps 150
         --method-images 20000 --method-epochs 3)
else
  ballot=()
  extra=(--n-images 50000)
fi
if [ "$DEVICE" = cpu ]; then  # dry run: tiny settings, nothing of it is a measurement
  ballot=(--engine-model cnn --engine-epochs 1 --epochs 2)
  extra=(--throughput-models cnn --n-images 512 --throughput-steps 2 --repeats 1
         --ceiling-models cnn --ceiling-steps 2 --concurrent-models cnn --runs-per-gpu 1,2 --concurrent-steps 3
         --method-images 256 --method-epochs 1)
fi
if stage bench; then
  $PY benchmarks/bench_training.py --device "$DEVICE" --only throughput,ceilings,concurrent,methods,projection \
      --json "$OUT/issue13_cuda.json" ${extra[@]+"${extra[@]}"} 2>&1 | tee "$OUT/issue13_cuda.txt"
  done_stage bench
fi
if stage ballot; then
  $PY benchmarks/ballot_devices.py --device "$DEVICE" --json "$OUT/ballot_devices.json" ${ballot[@]+"${ballot[@]}"} \
      2>&1 | tee "$OUT/ballot_devices.txt"
  done_stage ballot
fi
if stage decide; then
  $PY benchmarks/decide.py "$OUT" 2>&1 | tee "$OUT/decide.txt"
  done_stage decide
fi
