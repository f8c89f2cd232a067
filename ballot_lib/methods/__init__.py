"""Methods by name (``METHODS.names()``); run one with :func:`run_method`.

Every method shares the experiment's data, model, θ0, dense θT and training loop, and is compared at equal
density. Registered here: ``dense``, ``mp`` (magnitude pruning), ``lth`` (IMP with rewinding), ``random``
(random control), ``ballot``, the baselines ``safecompress`` (dynamic sparse training with a fairness test) and
``fairscratch`` (Fair Scratch Tickets), and the Prune Responsibly population's techniques (``l1_unstructured``,
``global_unstructured``, ``random_unstructured``, ``ln_structured``, ``random_structured``). Each method declares
its training compute (:func:`ballot_lib.methods.base.compute_epochs`).
"""
from .base import METHODS, MethodSpec, make_config, run_method
from . import (dense, magnitude, lth, random_control, ballot, prune_responsibly, safecompress,  # noqa: F401
               fairscratch)  # (registration)
from .grid import Variant, prepare_grid, run_grid
from ..plugins import load_plugins

load_plugins()  # methods, models, datasets or strategies registered outside the library ($BALLOT_PLUGINS)

__all__ = ["METHODS", "MethodSpec", "Variant", "make_config", "prepare_grid", "run_grid", "run_method"]
