#!/usr/bin/env bash
# Issue #13's checks on a GPU in one go: the CUDA tests of the step modes, then the benchmark's measurements 3-6
# (step modes vs ceilings, concurrent runs per GPU, per-method wall time, paper-grid projection).
#
#   benchmarks/gpu_check.sh [OUTDIR]            # full: about 10-15 min on an H100
#   QUICK=1 benchmarks/gpu_check.sh [OUTDIR]    # shorter settings: about 5 min
#
# Everything printed is also written under OUTDIR (default outputs/bench): gpu.txt, cuda_tests.txt,
# issue13_cuda.txt and issue13_cuda.json. Quote gpu.txt (GPU name, torch version) with the numbers.
set -u
OUT=${1:-outputs/bench}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1;
  $PY -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name())"; } | tee "$OUT/gpu.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_step_modes.py 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
if [ "${QUICK:-0}" = 1 ]; then
  extra=(--ceiling-models cnn,resnet18,resnet50,vgg16_bn --ceiling-steps 100 --runs-per-gpu 1,4,8
         --concurrent-steps 200 --method-images 20000 --method-epochs 3)
else
  extra=()
fi
$PY benchmarks/bench_training.py --device cuda --only ceilings,concurrent,methods,projection \
    --json "$OUT/issue13_cuda.json" ${extra[@]+"${extra[@]}"} 2>&1 | tee "$OUT/issue13_cuda.txt"
