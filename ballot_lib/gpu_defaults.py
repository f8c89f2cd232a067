"""GPU defaults chosen by measurement (issue #13).

Written by ``benchmarks/decide.py --apply`` from the GPU benchmark's output (``benchmarks/gpu_check.sh``); re-run
that script rather than editing the values by hand, so that :data:`MEASURED_ON` stays true.
"""
from __future__ import annotations

#: The measurement the values come from (GPU name, torch version, date, models measured); ``None``: not
#: yet measured on a GPU, and the values are the rules of thumb described beside each.
MEASURED_ON: dict | None = None

#: What ``step_mode="auto"`` means on a CUDA device (:func:`ballot_lib.compiled.resolve_step_mode`; on every other
#: device it is ``"eager"``). ``"graph"`` once the benchmark shows the graph step at least as fast as the eager one
#: for every model it measures and the CUDA tests of the step modes pass; until then ``"eager"``.
CUDA_AUTO_STEP_MODE: str = "eager"

#: Concurrent jobs per GPU by model (``sweep grid --gpus``' default, :func:`ballot_lib.sweep.default_runs_per_gpu`):
#: the smallest N whose aggregate images/s is within ``RUNS_PER_GPU_TOLERANCE`` of the best N measured. Until
#: measured: issue #13's one H100 figure for resnet18 (eager, batch 128: 4 processes 2.8x one, 8 less than 4) and a
#: rule by size for the rest (up to resnet18's 11M parameters 4, the larger resnet50/vgg16_bn 2).
RUNS_PER_GPU: dict[str, int] = {"cnn": 4, "mlp": 4, "resnet18": 4, "resnet50": 2, "vgg16_bn": 2}
