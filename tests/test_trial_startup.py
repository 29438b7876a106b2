"""What a Tune trial's processes import before training: only what they use.

Every trial starts new processes (its actor after the first wave, its Train controller, its
Train worker); each import they skip is CPU off every trial's start-up (see "Trial start-up"
in docs/performance.md). Each check runs in a fresh interpreter, as those processes do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raylung.config import AugmentConfig, DataConfig, RaylungConfig
from raylung.data.transforms import named_augmentations
from raylung.plan.effective import effective_pipeline

REPO = Path(__file__).resolve().parents[1]


def _loaded_after(code: str) -> dict[str, bool]:
    """Which heavy libraries a fresh interpreter has imported after running `code`."""
    probe = (
        f"import json, sys\n{code}\n"
        "print(json.dumps({m: m in sys.modules for m in "
        "('sklearn', 'albumentations', 'torch', 'torch.utils.flop_counter')}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_train_worker_scores_an_epoch_without_scikit_learn():
    """The loop's modules and an epoch's validation metrics: scikit-learn stays out."""
    loaded = _loaded_after(
        "import raylung.train.launcher as launcher, raylung.train.loop\n"
        "from raylung.artifacts.metrics import binary_metrics\n"
        "assert launcher.run_worker\n"
        "binary_metrics([0, 1, 1, 0], [0.2, 0.7, 0.4, 0.4])"
    )
    assert loaded["torch"]  # the probe did import the loop
    assert not loaded["sklearn"]
    assert not loaded["torch.utils.flop_counter"]  # Triton's runtime comes with it: 0.25 CPU-s


def test_a_trial_actor_records_its_pipeline_without_albumentations():
    """What `run_trial` does before its trainer: its modules, the config, the effective pipeline."""
    loaded = _loaded_after(
        "import raylung.tune.trial\n"
        "from raylung.config import RaylungConfig\n"
        "from raylung.plan.effective import effective_pipeline\n"
        "assert effective_pipeline(RaylungConfig()).augment"
    )
    assert not loaded["albumentations"]
    assert loaded["torch"] and not loaded["torch.utils.flop_counter"]  # built the model, counted nothing


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("policy", ["none", "light", "medium", "heavy"])
def test_the_recorded_pipeline_is_the_built_one(policy: str, in_chans: int):
    """The plan a trial records without building transforms equals the transforms as built, so
    pipeline digests are those of runs recorded before (they read the built transforms' p)."""
    data = DataConfig(in_chans=in_chans, augment=AugmentConfig(policy=policy, gamma=0.3))
    cfg = RaylungConfig().model_copy(update={"data": data})
    built = {name: float(transform.p) for name, transform in named_augmentations(data)}
    assert effective_pipeline(cfg).augment == built
    assert list(effective_pipeline(cfg).augment) == list(built)  # same pipeline order
    assert ("hed_jitter" in built) == (in_chans == 3 and policy != "none")
