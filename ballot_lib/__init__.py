"""ballot_lib: fairness under neural-network pruning (Ballot, ISSTA'24; Prune Responsibly, 2020).

Modules: ``data`` (datasets by name), ``models``, ``training`` (the one training loop), ``pruning`` (masks),
``metrics`` (CWV, MCD, group gaps, CIs), ``results`` (the results store), ``experiment`` (shared set-up per
seed), ``methods`` (dense, mp, lth, random, ballot), ``analysis`` (paired comparisons), ``plots``, ``sweep``
(papermill batches).
"""
from . import metrics, pruning  # noqa: F401  (light: the public API of SPEC §9)

__version__ = "0.1.0"


def __getattr__(name: str):
    # Heavier submodules load on first use so ``import ballot_lib`` stays fast.
    import importlib

    if name in {"data", "models", "training", "results", "experiment", "methods", "analysis", "plots", "sweep",
                "paths", "registry"}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ballot_lib' has no attribute {name!r}")
