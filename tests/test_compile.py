"""torch.compile and raylung's optimizer: same numbers as eager, and ``train.compile: auto``'s rule.

Compiling with Inductor on this CPU is slow: the two tiny models below took 650 s and 180 s of
wall time together under load (C++ code generation per kernel). Within the CI budget the tests
split what can go wrong:

- The graph torch.compile runs (Dynamo's capture, AOTAutograd's functionalised forward and
  backward, decompositions, the partition) is checked for whole models with the
  ``aot_eager_decomp_partition`` backend, which stops before code generation: the two
  structurally different families at one block per stage, ResNet-ours (raylung's blocks: FReLU,
  ECA, spatial attention, its stem; eager training runs raylung's own kernels, compiled code the
  plain ops) and timm's ResNet-50 (the four baselines share its ``ResNet`` class and differ only
  in the stem, the shortcut pooling and the groups; ResNet-ours(26/50) only in depth and width).
- Inductor's generated code on the CPU is checked on ResNet-ours' stem and first stage, which
  hold every kind of layer ResNet-ours has.
- On a CUDA machine, both tiny models go through Inductor whole (skipped without a GPU).

All in float64, where eager and compiled differ only by summation order.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from raylung.models import create_model
from raylung.train import compile_plan
from raylung.train.compile_plan import PROFILES, decide_compile, model_family
from raylung.train.parts import build_optimizer, fused_supported

# (model, kwargs): one block per stage; ResNet-ours at a quarter width.
FAMILIES = [("resnet_ours_tiny", {}), ("resnet50", {"depths": (1, 1, 1, 1)})]
IDS = [name for name, _ in FAMILIES]
FLOAT64 = {"rtol": 1e-9, "atol": 1e-11}  # observed: < 1e-13 after two steps


def _steps(module: nn.Module, forward, images: torch.Tensor, steps: int = 2):
    """Outputs and gradients of `steps` training steps (fused Adam between them)."""
    optimizer = build_optimizer(module, lr=1e-3)
    labels = torch.arange(images.shape[0], dtype=images.dtype, device=images.device) % 2
    seen = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        out = forward(images)
        nn.functional.binary_cross_entropy_with_logits(out.flatten(1).mean(1), labels).backward()
        seen.append((out.detach().clone(), {n: p.grad.clone() for n, p in module.named_parameters()}))
        optimizer.step()
    return seen


def _assert_compiled_matches_eager(module: nn.Module, images: torch.Tensor, steps: int = 2, **compile_kwargs):
    eager, compiled = copy.deepcopy(module), copy.deepcopy(module)
    expected = _steps(eager, eager, images, steps)
    torch._dynamo.reset()
    got = _steps(compiled, torch.compile(compiled, dynamic=False, **compile_kwargs), images, steps)
    for (out, grads), (ref_out, ref_grads) in zip(got, expected, strict=True):
        torch.testing.assert_close(out, ref_out, **FLOAT64)
        assert grads.keys() == ref_grads.keys()
        for key in ref_grads:
            torch.testing.assert_close(grads[key], ref_grads[key], **FLOAT64, msg=key)


def _tiny_model(name: str, kwargs: dict, device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, **kwargs).to(device=device, dtype=torch.float64).train()


@pytest.mark.parametrize(("name", "kwargs"), FAMILIES, ids=IDS)
def test_compiled_graph_matches_eager_logits_and_every_gradient(name, kwargs, one_torch_thread):
    images = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    _assert_compiled_matches_eager(_tiny_model(name, kwargs), images, backend="aot_eager_decomp_partition")


def test_inductor_cpu_code_matches_eager_on_resnet_ours_layers(one_torch_thread):
    model = _tiny_model("resnet_ours_tiny", {})
    layers = nn.Sequential(model.stem, model.stages[0])  # stem, FReLU, ECA, spatial attention
    _assert_compiled_matches_eager(layers, torch.randn(2, 3, 32, 32, dtype=torch.float64), steps=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("name", "kwargs"), FAMILIES, ids=IDS)
def test_inductor_cuda_code_matches_eager(name, kwargs):
    images = torch.randn(4, 3, 64, 64, dtype=torch.float64, device="cuda")
    _assert_compiled_matches_eager(_tiny_model(name, kwargs, "cuda"), images)


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    # No bias before a batch norm: its gradient would be rounding noise, which Adam scales to +-lr.
    return nn.Sequential(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 1))


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_fused_adam_takes_the_reference_adams_steps(kind):
    fused_net, reference_net = _tiny_net(), _tiny_net()
    fused = build_optimizer(fused_net, kind, lr=1e-2, weight_decay=0.01)
    reference = build_optimizer(reference_net, kind, lr=1e-2, weight_decay=0.01, reference=True)
    assert fused.param_groups[0]["fused"] is True
    assert reference.param_groups[0]["foreach"] is False and not reference.param_groups[0]["fused"]
    torch.manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(8, 6), torch.rand(8, 1)
        for net, optimizer in ((fused_net, fused), (reference_net, reference)):
            optimizer.zero_grad()
            nn.functional.mse_loss(net(x), y).backward()
            optimizer.step()
    for got, expected in zip(fused_net.parameters(), reference_net.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_optimizer_falls_back_to_foreach_where_no_fused_kernel_exists(caplog):
    net = _tiny_net()
    assert fused_supported(net.parameters())
    assert not fused_supported([torch.zeros(2, dtype=torch.int64)])
    assert not fused_supported([torch.zeros(2, device="meta")])
    with torch.device("meta"):
        meta_net = _tiny_net()
    with caplog.at_level(logging.INFO, logger="raylung.train.parts"):
        optimizer = build_optimizer(meta_net, announce=True)
    assert optimizer.param_groups[0]["foreach"] is True and not optimizer.param_groups[0]["fused"]
    assert "foreach" in caplog.text and "meta/float32" in caplog.text


def test_a_checkpoint_of_the_reference_adam_resumes_fused(tmp_path):
    from raylung.artifacts.checkpoint import OPTIMIZER_FILE, load_optimizer

    net = _tiny_net()
    old = build_optimizer(net, lr=1e-2, reference=True)
    nn.functional.mse_loss(net(torch.randn(4, 6)), torch.rand(4, 1)).backward()
    old.step()
    torch.save({"optimizer": old.state_dict()}, tmp_path / OPTIMIZER_FILE)
    resumed = build_optimizer(net, lr=1e-2)
    load_optimizer(tmp_path, resumed, None)
    assert resumed.param_groups[0]["fused"] is True
    resumed.step()  # fused needs the loaded step counters as float32 tensors on the device
    assert all(s["step"].item() == 2 for s in resumed.state.values())


# --- train.compile: auto -----------------------------------------------------------------


def _decide(setting, device="cuda", model="resnet_ours50", epochs=20, steps=100, batch=64, size=(320, 240)):
    width, height = size
    return decide_compile(
        setting, device, model, epochs=epochs, steps_per_epoch=steps, batch=batch, height=height, width=width
    )


def test_families_cover_every_registered_model():
    from raylung.models import list_models

    families = {name: model_family(name) for name in list_models()}
    assert families["resnet_ours50"] == families["resnet_ours_tiny"] == "resnet_ours"
    assert {families[n] for n in ("resnet50", "resnet50c", "resnet50d", "resnext50_32x4d")} == {"resnet"}


def test_auto_compiles_a_long_cuda_run_and_not_a_short_one():
    profile = PROFILES[("cuda", "resnet_ours")]
    # Break-even at the profile's own batch: cold compile / (step x (1 - 1/speed-up)) steps.
    break_even = profile.cold_compile_s / (profile.eager_step_s * (1 - 1 / profile.speedup))
    assert 4000 < break_even < 5000
    long = _decide("auto", epochs=50, steps=100)  # 5,000 steps at batch 64
    short = _decide("auto", epochs=40, steps=100)
    assert long.compile and not short.compile
    assert "5000 steps" in long.reason and "> 95 s cold compile: compile" in long.reason
    assert "<= 95 s" in short.reason and short.reason.endswith("eager")


def test_auto_scales_the_step_by_pixels_per_step():
    # The paper's batch 8 at 320x240: an eighth of the profile's step, so 8x the steps to pay.
    assert not _decide("auto", batch=8, epochs=50, steps=100).compile
    assert _decide("auto", batch=8, epochs=50, steps=800).compile
    # Twice the pixels per image halves the steps needed.
    assert _decide("auto", epochs=25, steps=100, size=(640, 240)).compile


def test_auto_never_compiles_on_the_cpu_or_an_unmeasured_device():
    for model in ("resnet_ours50", "resnet50", "resnext50_32x4d"):
        assert PROFILES[("cpu", model_family(model))].speedup < 1
        decision = _decide("auto", device="cpu", model=model, epochs=10_000, steps=10_000)
        assert not decision.compile and "never pays" in decision.reason
    mps = _decide("auto", device="mps", epochs=10_000, steps=10_000)
    assert not mps.compile and "no measured profile" in mps.reason


def test_true_and_false_override_the_rule():
    assert _decide(True, device="cpu", epochs=1, steps=1).compile
    assert not _decide(False, epochs=10_000, steps=10_000).compile


def test_build_run_asks_the_plan_with_the_workers_planned_steps(demo_root, tmp_path, monkeypatch, caplog):
    from run_factory import tiny_config

    from raylung.train import parts
    from raylung.train.launcher import prepare_splits

    cfg = tiny_config(demo_root, tmp_path, epochs=7, overrides=["train.max_steps_per_epoch=2"])
    cfg = prepare_splits(cfg, str(tmp_path / "split"))
    assert cfg.train.compile == "auto"  # the default
    asked = []

    def spy(*args, **kwargs):
        asked.append((args, kwargs))
        return decide_compile(*args, **kwargs)

    monkeypatch.setattr(parts, "decide_compile", spy)
    with caplog.at_level(logging.INFO, logger="raylung.train.parts"):
        run = parts.build_run(cfg, torch.device("cpu"))
    (args, kwargs), *_ = asked
    assert args == ("auto", "cpu", "resnet_ours_tiny")
    assert kwargs == {"epochs": 7, "steps_per_epoch": 2, "batch": 16, "height": 48, "width": 64}
    assert not isinstance(run.model, torch._dynamo.eval_frame.OptimizedModule)
    assert "train.compile: auto, resnet_ours on cpu: compiled steps measured no faster" in caplog.text
    assert "optimizer: Adam, fused kernels" in caplog.text
    assert run.optimizer.param_groups[0]["fused"] is True

    forced = parts.build_run(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"compile": True})}), torch.device("cpu")
    )
    assert isinstance(
        forced.model, torch._dynamo.eval_frame.OptimizedModule
    )  # wrapped; compiles on first call


def test_module_docstring_states_the_rule():
    assert "saving = planned steps x eager step seconds x (1 - 1 / speed-up)" in compile_plan.__doc__
