"""Which part of ResNet-ours matters: the switches, the ablation grid, timm registration, the
data-efficiency axis and a real ablation benchmark on LC25000."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raylung.config import ModelConfig
from raylung.config.loading import load_config
from raylung.config.model_build import build_model
from raylung.config.schema import ABLATIONS, SWITCH_FIELDS
from raylung.data import Sample
from raylung.data.splits import subsample_groups
from raylung.errors import ConfigError
from raylung.models import create_model, list_models
from raylung.models.switches import SWITCH_NAMES
from raylung.plan.effective import architecture_fingerprint

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
ABLATION_VARIANTS = next(
    d.choices for d in load_config(SPACES / "ablation.yaml").space.distributions if d.path == "model.ablation"
)

# Measured with the model code before the switches existed (commit 870e37e): the default model
# must stay the same parameter for parameter, and give the same output for the same seed.
BEFORE = {
    "resnet_ours50": {"params": 23_945_735, "signature": "87babee749529d5b"},
    "resnet_ours_tiny": {"params": 528_703, "signature": "7ec76549195f8ebb"},
}
TINY_LOGITS_BEFORE = [-0.19873391091823578, -0.19500114023685455]


def state_signature(model: torch.nn.Module) -> str:
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_the_default_switches_build_the_model_as_before(name):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == BEFORE[name]["params"]
    assert state_signature(model) == BEFORE[name]["signature"]


def test_the_default_tiny_model_computes_what_it_did_before():
    torch.manual_seed(0)
    model = create_model("resnet_ours_tiny").eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        logits = model(x).flatten().tolist()
    assert logits == pytest.approx(TINY_LOGITS_BEFORE, abs=1e-6)


def test_the_config_and_the_model_name_the_same_switches():
    assert tuple(SWITCH_FIELDS) == SWITCH_NAMES
    assert set(ABLATION_VARIANTS) <= set(ABLATIONS)


@pytest.mark.parametrize("variant", ABLATION_VARIANTS)
def test_every_ablation_variant_trains_a_step(variant):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet_ours_tiny", ablation=variant), in_chans=3).train()
    x = torch.randn(2, 3, 48, 64)
    loss = model(x).square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_every_ablation_variant_is_a_different_architecture():
    prints = {}
    for variant in ABLATION_VARIANTS:
        with torch.device("meta"):
            model = build_model(ModelConfig(name="resnet_ours50", ablation=variant), in_chans=3)
        prints[variant] = architecture_fingerprint(model)
    assert len(set(prints.values())) == len(prints), prints


def test_switches_remove_what_they_name():
    def modules(**switches):
        with torch.device("meta"):
            model = create_model("resnet_ours_tiny", **switches)
        return {type(m).__name__ for m in model.modules()}

    full = modules()
    assert {"EcaModule", "SpatialAttention", "FReLU", "Stem", "DownsampleAvg"} <= full
    assert "EcaModule" not in modules(channel_attention="none")
    assert "SEModule" in modules(channel_attention="se")
    assert "SpatialAttention" not in modules(spatial_attention=False)
    assert "FReLU" not in modules(activation="relu")
    assert {"ResNetStem"} <= modules(stem="resnet") and "Stem" not in modules(stem="deep")
    assert "DownsampleConv" in modules(shortcut="conv") and "DownsampleAvg" not in modules(shortcut="conv")
    depthwise = sum(1 for m in create_model("resnet_ours_tiny").modules() if getattr(m, "groups", 1) > 1)
    no_dw = sum(
        1 for m in create_model("resnet_ours_tiny", depthwise=False).modules() if getattr(m, "groups", 1) > 1
    )
    assert depthwise - no_dw == 8  # two per block, four blocks


def test_an_ablation_preset_and_a_contradicting_switch_are_refused():
    with pytest.raises(ConfigError, match="ablation no_eca sets channel_attention"):
        load_config(text="model:\n  ablation: no_eca\n  channel_attention: se\n")
    with pytest.raises(ValueError, match="has no channel_attention"):
        build_model(ModelConfig(name="resnet50", ablation="no_eca"), in_chans=3)


@pytest.mark.parametrize("name", list_models())
def test_timm_builds_every_registered_model_like_raylung(name):
    import timm

    torch.manual_seed(0)
    ours = create_model(name, num_classes=1).eval()
    theirs = timm.create_model(name, num_classes=1, pretrained=False).eval()
    assert state_signature(ours) == state_signature(theirs)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x))


def test_timm_refuses_pretrained_weights_for_resnet_ours():
    import timm

    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet_ours_tiny", pretrained=True)


# --- the data-efficiency axis --------------------------------------------------------------------


def _samples(n_groups: int = 60, per_group: int = 3) -> list[Sample]:
    return [
        Sample(path=f"/img/{g}_{i}.png", label=int(g % 3 == 0), subclass=None, group=f"g{g}", split="train")
        for g in range(n_groups)
        for i in range(per_group)
    ]


def test_a_training_fraction_is_grouped_stratified_and_nested():
    samples = _samples()
    previous: set[str] = set()
    for fraction in (0.05, 0.1, 0.25, 0.5, 1.0):
        subset = subsample_groups(samples, fraction, seed=0)
        groups = {s.group for s in subset}
        # whole groups only, both labels, about the asked share, nested in the next fraction
        assert all(sum(s.group == g for s in subset) == 3 for g in groups)
        assert {s.label for s in subset} == {0, 1}
        assert abs(len(subset) - fraction * len(samples)) <= 2 * 3 + 1
        assert previous <= groups
        previous = groups
    assert subsample_groups(samples, 0.1, seed=0) != subsample_groups(samples, 0.1, seed=1)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero_and_a_better_one_is_positive():
    from raylung.artifacts.metrics import paired_difference_intervals

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    good = np.clip(labels * 0.6 + rng.normal(0.2, 0.25, 300), 0, 1)
    poor = np.clip(labels * 0.2 + rng.normal(0.4, 0.3, 300), 0, 1)
    groups = np.repeat(np.arange(150), 2)
    delta, intervals = paired_difference_intervals(labels, good, good, n_boot=50, groups=groups)
    assert delta["f1"] == 0 and intervals["f1"] == (0.0, 0.0)
    delta, intervals = paired_difference_intervals(labels, good, poor, n_boot=300, groups=groups)
    low, high = intervals["accuracy"]
    assert 0 < low <= delta["accuracy"] <= high


# --- a real ablation benchmark -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_two_variant_ablation_on_lc25000_writes_deltas_and_costs(ray_address, lc25000_root, tmp_path):
    from raylung.benchmark.runner import run_benchmark

    loaded = load_config(
        SPACES / "ablation.yaml",
        [
            f"experiment.storage={tmp_path}",
            f"data.root={lc25000_root}",
            "data.layout=auto",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.image_size=[48,48]",
            "data.loader_workers=0",
            "model.name=resnet_ours_tiny",
            "model.ablation={choice: [full, no_attention]}",
            "train.epochs=1",
            "train.batch_size=32",
            "train.lr=0.003",
            "train.max_steps_per_epoch=4",
            "resources.use_gpu=false",
            "resources.cpus_per_worker=1",
            "search.max_concurrent_trials=2",
            "wandb.mode=offline",
        ],
    )
    outcome = run_benchmark(loaded, [0], n_boot=50, fractions=[0.25, 1.0], step_repeats=1)

    assert outcome.axis == "model.ablation" and outcome.reference == "full"
    assert sorted((r.model, r.fraction) for r in outcome.results) == [
        ("full", 0.25), ("full", 1.0), ("no_attention", 0.25), ("no_attention", 1.0),
    ]  # fmt: skip
    by = {(r.model, r.fraction): r for r in outcome.results}
    for fraction in (0.25, 1.0):
        full, ablated = by[("full", fraction)], by[("no_attention", fraction)]
        assert full.delta["f1"] == 0.0
        assert ablated.delta["f1"] == pytest.approx(ablated.metrics["f1"] - full.metrics["f1"])
        low, high = ablated.delta_intervals["f1"]
        assert low <= ablated.delta["f1"] <= high
        assert ablated.cost.params < full.cost.params and ablated.cost.gflops < full.cost.gflops
        assert full.cost.step_ratio == 1.0 and ablated.cost.step_ratio > 0
    table = outcome.files["markdown"].read_text()
    assert "delta f1 vs full" in table and "step time x full" in table and "GFLOPs" in table
    saved = json.loads(outcome.files["json"].read_text())
    assert saved["axis"] == "model.ablation" and len(saved["results"]) == 4
    assert outcome.files["fractions"].stat().st_size > 5000
    # each run trained on the fraction it is listed under, as its recorded pipeline says
    for result in outcome.results:
        (run,) = result.runs
        written = outcome.experiment.local / "trials" / run.trial_id / "pipeline.json"
        assert json.loads(written.read_text())["input"]["train_fraction"] == result.fraction
