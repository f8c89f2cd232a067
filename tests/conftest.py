"""Shared fixtures: tiny experiments on the embedded ``digits`` data, hand-made data bundles and helpers.

Everything here is sized for CI on two CPU cores: an MLP of width 16 on 8x8 digits trains one epoch in a few
hundredths of a second, so a whole method run (dense + sparse retraining) costs well under a second.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ballot_lib.data import DataBundle, DataConfig, Split
from ballot_lib.experiment import Experiment
from ballot_lib.models import ModelConfig
from ballot_lib.training import TrainConfig

# Models here are tiny: one intra-op thread is as fast as several and does not slow down under CPU contention.
torch.set_num_threads(1)

#: The recipe of every tiny experiment: 2 epochs, so rewind_epoch 1 is a valid late-rewinding point.
TINY_TRAIN = TrainConfig(epochs=2, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine")


def stored_run_bytes(run_dir: Path) -> dict:
    """Every stored file of a run folder as bytes, summary.json parsed without its wall-clock ``seconds``: two runs
    that stored the same results compare equal (kill-and-resume and derivation tests)."""
    import json

    out = {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())
           if p.is_file() and p.name not in ("run.json", ".lock", "summary.json") and not p.name.startswith(".")}
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("seconds")
    return {**out, "summary.json": summary}


def make_experiment(results_dir: Path, **train_overrides) -> Experiment:
    """A tiny experiment: digits, an MLP of width 16, 2 epochs on CPU, results in ``results_dir``."""
    from dataclasses import replace

    return Experiment(
        DataConfig("digits"),
        ModelConfig("mlp", width=16),
        replace(TINY_TRAIN, **train_overrides),
        device="cpu",
        results_dir=str(results_dir),
        progress=False,
    )


@pytest.fixture
def tiny_exp(tmp_path) -> Experiment:
    """A fresh tiny experiment whose results store is empty (``tmp_path / "results"``)."""
    return make_experiment(tmp_path / "results")


def tree(root: Path) -> list[str]:
    """Every file and folder below ``root`` (relative paths, sorted); empty if ``root`` does not exist."""
    root = Path(root)
    if not root.exists():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        out += [str(rel / d) for d in dirnames] + [str(rel / f) for f in filenames]
    return sorted(out)


def toy_bundle(n_train: int = 48, n_eval: int = 16, features: int = 5, seed: int = 0) -> DataBundle:
    """A hand-made two-class tabular bundle: class = sign of the first feature (learnable by nn.Linear(5, 2))."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        x = torch.randn(n, features, generator=gen)
        return Split(x, (x[:, 0] > 0).long())

    return DataBundle(name="toy", train=split(n_train), val=split(n_eval), test=split(n_eval), num_classes=2,
                      class_names=["neg", "pos"])


@pytest.fixture
def toy() -> DataBundle:
    return toy_bundle()
