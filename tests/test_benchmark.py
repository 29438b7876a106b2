"""`raylung benchmark` on real LC25000 tiles: all five Table-3 models, reduced to CPU size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raylung.artifacts.metrics import bootstrap_intervals
from raylung.benchmark.paper import TABLE_3

REPO_SPACES = __import__("pathlib").Path(__file__).resolve().parents[1] / "search_spaces"


def test_bootstrap_of_several_seeds_brackets_their_mean():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(labels * 0.6 + rng.normal(0.2, 0.25, (3, 200)), 0, 1)
    groups = np.repeat(np.arange(100), 2)
    intervals = bootstrap_intervals(labels, probs, n_boot=300, groups=groups)
    from raylung.artifacts.metrics import binary_metrics

    mean_f1 = np.mean([binary_metrics(labels, row)["f1"] for row in probs])
    low, high = intervals["f1"]
    assert low < mean_f1 < high and high - low < 0.3


@pytest.mark.slow
@pytest.mark.shared_data
def test_reduced_table3_on_lc25000(ray_address, lc25000_root, tmp_path):
    from raylung.benchmark.runner import run_benchmark
    from raylung.config.loading import load_config

    loaded = load_config(
        REPO_SPACES / "baselines.yaml",
        [
            f"experiment.storage={tmp_path}",
            f"data.root={lc25000_root}",
            "data.layout=auto",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.image_size=[64,64]",
            "data.loader_workers=0",
            "model.depths=[1,1,1,1]",
            "train.epochs=1",
            "train.batch_size=32",
            "train.lr=0.001",
            "train.max_steps_per_epoch=8",
            "resources.use_gpu=false",
            "resources.cpus_per_worker=1",
            "search.max_concurrent_trials=2",
            "wandb.mode=offline",
        ],
    )
    outcome = run_benchmark(loaded, [0], n_boot=100)

    assert [r.model for r in outcome.results] == list(TABLE_3)
    for result in outcome.results:
        assert len(result.runs) == 1 and result.paper is not None
        for metric in ("accuracy", "precision", "recall", "f1"):
            low, high = result.intervals[metric]
            assert low <= result.metrics[metric] <= high
        assert (result.runs[0].export / "model.safetensors").is_file()
    table = outcome.files["markdown"].read_text()
    assert "| ResNet-ours(50) |" in table and "0.8356" in table  # the paper's F1 alongside
    rows = json.loads(outcome.files["json"].read_text())["results"]
    assert len(rows) == 5 and not json.loads(outcome.files["json"].read_text())["synthetic"]
    assert outcome.files["chart"].stat().st_size > 5000
    assert len(outcome.files["csv"].read_text().splitlines()) == 6
