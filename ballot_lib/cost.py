"""What a parameter file will cost before it runs: ``python -m ballot_lib.sweep cost FILE ...``.

For every job of a parameter file, the notebook's plan (:mod:`ballot_lib.plans`) lists the ``run_grid`` calls it
makes; each (variant, density, seed) becomes a planned run with its hash -- the folder it will have in the store
-- so that runs shared between grids or jobs count once, exactly as the store shares them:

* the **dense run** of each (setting, seed) trains once, for the dense variant or the first method that reuses it
  (``MethodSpec.reuses_dense``: MP, LTH, the random control, Ballot, the Prune Responsibly techniques), which then
  counts only its own training, ``compute_epochs`` minus the dense recipe's epochs; SafeCompress and FairScratch
  need only θ0 (:meth:`ballot_lib.experiment.Experiment.initial_weights`) and train no dense run;
* a run whose twin under the other checkpoint rule is planned before it (or complete in the store and usable)
  reuses that training and costs nothing (:func:`ballot_lib.methods.base.training_twin`, the rule
  :func:`~ballot_lib.methods.run_method` applies): a ``select="val_rule"`` run its ``select="last"`` twin, a
  ``select="last"`` run its val-rule twin (SafeCompress and FairScratch store their final mask for it);
* a run already complete in the results store (``results_dir``) is loaded, not trained (``todo`` excludes it).

Each epoch costs its training images plus a third of its evaluation images (val and test are evaluated every
epoch, forward only), in **32-pixel image equivalents** (× (side/32)², conv nets with global pooling); feature
vectors count one each. Given images/s per model at 32×32 (``--ips resnet18=13200``, as
``benchmarks/bench_training.py`` measures them) and the speed-up of several runs per GPU (``--concurrency``), the
images become GPU-hours. Not counted: Ballot's vote scoring during dense training (measured 0.10× an LTH retraining
on an H100, issue #13), replays of rewind points the dense run does not keep (θk, k ∉ {1, 2, 3, 5}: at most k
epochs per seed), data loading, and notebook 02's walk-through masks (no training).
"""
from __future__ import annotations

import math

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from .data.sizes import SplitSizes, split_sizes
from .plans import Grid, notebook_plan

#: evaluation (forward only) of one image, in training steps of one image
EVAL_COST = 1 / 3


@dataclass(frozen=True)
class PlannedRun:
    """One run a job will train or load (``epochs``: its own training, in epochs of its recipe)."""

    job: int
    stage: str
    dataset: str
    model: str
    variant: str
    method: str
    density: Optional[float]
    seed: int
    run_id: str
    epochs: float
    images_per_epoch: float  # 32-px image equivalents (train + EVAL_COST × (val + test))
    derived_from: str  # the run whose training this one reuses ("" if it trains)
    complete: bool  # already complete in the results store


def images_per_epoch(sizes: SplitSizes) -> float:
    """Cost of one epoch (training + evaluation of val and test) in 32-pixel image equivalents."""
    scale = 1.0 if sizes.side is None else (sizes.side / 32) ** 2
    return (sizes.train + EVAL_COST * (sizes.val + sizes.test)) * scale


def plan_grid(grid: Grid, job: int = 0, seen: Optional[dict[str, PlannedRun]] = None,
              results_dir: Optional[str] = None) -> list[PlannedRun]:
    """The runs of one ``run_grid`` call, in its order; runs already in ``seen`` (an earlier grid or job of the
    same plan) are not repeated. Nothing is loaded (except an embedded dataset, to count it), trained or written.
    """
    from .experiment import experiment_from
    from .methods import METHODS
    from .methods.base import config_dict, training_twin
    from .methods.grid import expand

    seen = {} if seen is None else seen
    params = {**grid.params, "results_dir": results_dir or grid.params.get("results_dir", "")}
    exp = experiment_from(params, check_device=False)
    T = exp.train.epochs
    per_epoch = images_per_epoch(split_sizes(exp.data))
    jobs = expand(grid.variants, grid.densities)
    # Each job's declared compute once, before anything is planned (it also checks options against the recipe).
    compute = [METHODS.get(v.method).compute_epochs(exp, cfg) for v, cfg in jobs]
    out: list[PlannedRun] = []

    def add(variant: str, method: str, cfg: Any, seed: int, epochs: float, derived: str = "") -> str:
        run = exp.store.run(exp.run_config(method, config_dict(cfg), seed))
        if run.id not in seen:
            seen[run.id] = PlannedRun(job, grid.stage, exp.data.name, exp.model.name, variant, method,
                                      getattr(cfg, "density", None), seed, run.id, float(epochs), per_epoch,
                                      derived, run.complete)
            out.append(seen[run.id])
        return run.id

    dense_cfg = METHODS.get("dense").config()
    for seed in grid.seeds:
        for (v, cfg), total in zip(jobs, compute):
            spec = METHODS.get(v.method)
            if v.method == "dense" or spec.reuses_dense:  # trains the seed's dense run unless it is planned
                add(v.label if v.method == "dense" else "dense", "dense", dense_cfg, seed, T)
            if v.method == "dense":
                continue
            twin = training_twin(exp, v.method, cfg, seed, planned=seen)
            if twin is not None:
                add(v.label, v.method, cfg, seed, 0.0, derived=twin.id)
            else:
                add(v.label, v.method, cfg, seed, total - T if spec.reuses_dense else total)
    return out


#: ``PlannedRun.job`` of the runs that a parameter file's aggregate execution (``sweep grid``'s last, serial
#: notebook run over every job's runs) would train because no job trains them
AGGREGATE = -1


def plan_jobs(notebook: str, jobs: Sequence[Mapping[str, Any]], results_dir: Optional[str] = None,
              choices: Optional[Mapping[str, str]] = None, aggregate: Optional[Mapping[str, Any]] = None
              ) -> pd.DataFrame:
    """Every run the jobs of one notebook train or load, one row each (:class:`PlannedRun`), shared runs once
    (``choices``: see :func:`ballot_lib.plans.notebook_plan`; ``aggregate``: the parameters of the aggregate
    execution, whose runs not trained by any job get ``job`` = :data:`AGGREGATE`)."""
    seen: dict[str, PlannedRun] = {}
    rows: list[PlannedRun] = []
    executions = list(enumerate(jobs)) + ([(AGGREGATE, aggregate)] if aggregate else [])
    for j, params in executions:
        for grid in notebook_plan(notebook, params, choices):
            rows += plan_grid(grid, j, seen, results_dir)
    df = pd.DataFrame([asdict(r) for r in rows], columns=list(PlannedRun.__dataclass_fields__))
    df["todo"] = (df["derived_from"] == "") & ~df["complete"].astype(bool)
    df["images"] = df["epochs"] * df["images_per_epoch"] * df["todo"]
    return df


def measured_rates(root: str | Path) -> pd.DataFrame:
    """Images/s per model at which the complete runs of a results store trained: the 32-px image equivalents of
    each run's final training (``train_epochs`` × :func:`images_per_epoch`) over its loop time (``seconds``,
    evaluation included, across interruptions), summed per model. Runs that reused a twin's training are left out.

    The rates are those of whatever device and step mode filled the store (neither is part of a run's identity):
    measure on a store that one kind of device filled, e.g. the first jobs of a batch. Columns: model, runs,
    Mimages, seconds, images_per_s, devices (where the runs trained, from their summaries' ``environment``;
    ``unknown`` for runs stored before it was recorded).
    """
    from .data import DataConfig
    from .results import ResultsStore, check_config_file, read_json

    rows = []
    for path in ResultsStore(root).complete_runs():
        summary = read_json(path / "summary.json")
        if summary.get("derived_from") or not summary.get("seconds", 0) > 0 or not summary.get("train_epochs", 0) > 0:
            continue
        config = check_config_file(path)
        stored = {k: v for k, v in config["data"].items() if k != "fixes"}  # (identity-only: DataConfig.identity)
        data = DataConfig(**{**stored, "lt_classes": tuple(stored.get("lt_classes", ()))})
        env = summary.get("environment") or {}
        rows.append({"model": config["model"]["name"], "seconds": summary["seconds"],
                     "images": summary["train_epochs"] * images_per_epoch(split_sizes(data)),
                     "device": str(env.get("device") or "unknown")})
    runs = pd.DataFrame(rows, columns=["model", "seconds", "images", "device"])
    g = runs.groupby("model")
    out = pd.DataFrame({"runs": g["images"].count(), "Mimages": g["images"].sum() / 1e6,
                        "seconds": g["seconds"].sum(),
                        "devices": g["device"].agg(lambda d: ", ".join(sorted(set(d))))}).reset_index()
    out["images_per_s"] = out["Mimages"] * 1e6 / out["seconds"]
    return out[["model", "runs", "Mimages", "seconds", "images_per_s", "devices"]]


def parse_rates(text: Optional[str], flag: str = "--ips", models: Optional[Sequence[str]] = None
                ) -> dict[str, float]:
    """``"resnet18=13200,resnet50=4100"`` -> {model: images/s}; ``ValueError`` naming ``flag``, the bad part and
    the valid ``models`` (default: every registered model)."""
    from .models import MODELS

    valid = list(models) if models is not None else MODELS.names()
    out: dict[str, float] = {}
    for part in [p for p in (text or "").split(",") if p.strip()]:
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"{flag}: expected MODEL=IMAGES_PER_S, got {part!r}") from None
        if name not in valid or not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"{flag}: {part!r}: the model must be one of {', '.join(valid)} and the images/s "
                             "a positive finite number")
        out[name] = rate
    return out


def summarize(plan: pd.DataFrame, ips: Optional[Mapping[str, float]] = None, concurrency: float = 1.0,
              by: Sequence[str] = ("file", "dataset", "model")) -> pd.DataFrame:
    """Per group: planned runs, runs to train, dense-recipe epochs and 32-px images (in millions) to train, and
    GPU-hours = images / (images/s of the model × ``concurrency``) where the model's rate is given."""
    if concurrency <= 0:
        raise ValueError(f"concurrency must be > 0, got {concurrency!r}")
    ips = dict(ips or {})
    p = plan.assign(todo_epochs=plan["epochs"] * plan["todo"])
    p["gpu_hours"] = [img / (ips[m] * concurrency) / 3600 if m in ips else float("nan")
                      for img, m in zip(p["images"], p["model"])]
    g = p.groupby(list(by), sort=False)
    out = pd.DataFrame({"runs": g["run_id"].count(), "to_train": g["todo"].sum(),
                        "epochs": g["todo_epochs"].sum(), "Mimages": g["images"].sum() / 1e6,
                        "gpu_hours": g["gpu_hours"].sum(min_count=1)}).reset_index()
    total = {**{k: "total" if i == 0 else "" for i, k in enumerate(by)},
             "runs": out["runs"].sum(), "to_train": out["to_train"].sum(), "epochs": out["epochs"].sum(),
             "Mimages": out["Mimages"].sum(),
             # a total over models of which some have no rate would understate: NaN then
             "gpu_hours": out["gpu_hours"].sum() if out["gpu_hours"].notna().all() else float("nan")}
    return pd.concat([out, pd.DataFrame([total])], ignore_index=True)
