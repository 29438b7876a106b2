"""ResNet-ours and the timm baselines: registry, shapes, gradients, sizes, export, config."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn
from torch.testing import assert_close

from raylung.config import ModelConfig
from raylung.config.model_build import build_model
from raylung.models import (
    ResNetOurs,
    attention_maps,
    count_parameters,
    create_model,
    get_model_entry,
    gflops,
    gradcam_target_layer,
    list_models,
)
from raylung.models.blocks import DownsampleAvg, PreActBottleneck
from raylung.models.kernels import eager_kernels

OURS = ["resnet_ours26", "resnet_ours50", "resnet_ours_tiny"]
BASELINES = ["resnet50", "resnet50c", "resnet50d", "resnext50_32x4d"]
SMALL = dict(depths=(1, 1, 1, 1))  # one block per stage: the structure, at a fraction of the cost


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def test_registry_lists_every_model_sorted() -> None:
    names = list_models()
    assert names == sorted(names)
    assert set(OURS + BASELINES) == set(names)
    assert get_model_entry("resnet_ours50").supports("eca_k")
    assert not get_model_entry("resnet50").supports("eca_k")


def test_create_model_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet_theirs'.*resnet_ours50"):
        create_model("resnet_theirs")


def test_create_model_unsupported_kwarg() -> None:
    with pytest.raises(ValueError, match="does not support pretrained"):
        create_model("resnet_ours_tiny", pretrained=True)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("kwarg", [{"eca_k": 5}, {"stem_channels": (32, 64)}, {"width": 0.5}])
def test_baselines_reject_ours_arguments(name: str, kwarg: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwarg))):
        create_model(name, **kwarg)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depths": (1, 1, 1)},
        {"depths": (1, 0, 1, 1)},
        {"stem_channels": (32,)},
        {"width": 0.0},
        {"eca_k": 4},
        {"eca_k": "auto"},
        {"num_classes": 0},
        {"drop_path_rate": 1.0},
    ],
)
def test_ours_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        create_model("resnet_ours_tiny", **kwargs)


@pytest.mark.parametrize("name", OURS + BASELINES)
def test_forward_shape_and_finite(name: str) -> None:
    model = create_model(name, num_classes=3, **SMALL).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        logits = model(x)
    assert features.shape == (2, model.num_features, 2, 3)
    assert pre_logits.shape == (2, model.num_features)
    assert logits.shape == (2, 3)
    assert bool(torch.isfinite(logits).all())
    assert_close(model.forward_head(features), logits)


@pytest.mark.parametrize("name", OURS + BASELINES)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = create_model(name, **SMALL).train()
    loss = nn.functional.binary_cross_entropy_with_logits(
        model(torch.randn(2, 3, 48, 64)), torch.tensor([[1.0], [0.0]])
    )
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    if name in OURS:  # timm zero-inits each block's last BN, which zeroes its branch's gradients
        zero = [n for n, p in model.named_parameters() if not bool(p.grad.abs().sum() > 0)]
        assert not zero


def test_resnet_ours50_stage_shapes_at_paper_input() -> None:
    model = create_model("resnet_ours50").eval()
    shapes: list[tuple[int, ...]] = []
    hooks = [
        s.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for s in model.stages
    ]
    with torch.no_grad():
        stem = model.stem(torch.randn(1, 3, 240, 320))
        features = model.forward_head(model.stages(stem), pre_logits=True)
    for hook in hooks:
        hook.remove()
    assert stem.shape == (1, 64, 60, 80)
    assert shapes == [(1, 256, 60, 80), (1, 512, 30, 40), (1, 1024, 15, 20), (1, 2048, 8, 10)]
    assert features.shape == (1, 2048)
    assert model.num_features == 2048


def test_resnet_ours50_parameter_count() -> None:
    model = _meta("resnet_ours50")
    assert 23.9e6 < count_parameters(model) < 24.1e6
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]
    first = model.stages[0][0]
    assert first.conv1.out_channels == first.conv3.out_channels // 4 == 64
    assert first.conv1_dw.groups == first.conv1_dw.in_channels and first.conv1_dw.bias is None


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_parameter_count_equals_timm(name: str) -> None:
    with torch.device("meta"):
        theirs = timm.create_model(name, num_classes=1)
    ours = _meta(name)
    assert count_parameters(ours) == count_parameters(theirs)
    assert type(ours).__mro__[1] is type(theirs)


def test_baseline_depths_and_channels() -> None:
    model = _meta("resnet50d", depths=(1, 2, 1, 1), in_chans=1, num_classes=2)
    assert [len(layer) for layer in (model.layer1, model.layer2, model.layer3, model.layer4)] == [1, 2, 1, 1]
    assert model.conv1[0].in_channels == 1
    assert model.fc.out_features == 2


def test_gflops_reports_two_per_multiply_add() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert gflops(conv, (1, 3, 10, 10)) == pytest.approx(2 * 3 * 8 * 9 * 100 / 1e9)
    assert 13.5 < gflops(_meta("resnet_ours50")) < 15.0


@pytest.mark.parametrize(
    ("eca_k", "expected"), [("adaptive", [5, 5, 5, 7]), (3, [3, 3, 3, 3]), (9, [9, 9, 9, 9])]
)
def test_eca_kernel_per_stage(eca_k: int | str, expected: list[int]) -> None:
    model = _meta("resnet_ours50", eca_k=eca_k)
    per_stage = [{b.attn_channel.kernel_size for b in stage} for stage in model.stages]
    assert per_stage == [{k} for k in expected]


def test_width_scales_stem_and_stages() -> None:
    model = _meta("resnet_ours_tiny")
    assert (model.stem.conv1.out_channels, model.stem.conv2.out_channels) == (8, 16)
    assert [stage[0].conv3.out_channels for stage in model.stages] == [64, 128, 256, 512]
    assert [stage[0].attn_channel.kernel_size for stage in model.stages] == [3, 5, 5, 5]
    wide = _meta("resnet_ours_tiny", width=0.5, stem_channels=(16, 32))
    assert (wide.stem.conv1.out_channels, wide.stem.conv2.out_channels) == (8, 16)
    assert wide.num_features == 1024


def test_downsample_paths_agree_on_odd_sizes() -> None:
    x = torch.randn(2, 64, 15, 20)
    block = PreActBottleneck(64, 128, stride=2).eval()
    assert isinstance(block.downsample, DownsampleAvg)
    with torch.no_grad():
        pre = block.act1(block.norm1(x))
        path_b = block.downsample(pre)
        mid = block.conv2(block.act2(block.norm2(block.conv1(block.conv1_dw(pre)))))
        path_a = block.conv3(block.conv3_dw(block.act3(block.norm3(mid))))
        out = block(x)
    assert path_a.shape == path_b.shape == out.shape == (2, 128, 8, 10)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample.conv.stride == (1, 1)
    # Without ceil_mode the pool would give 7x10; count_include_pad=False averages the edge.
    assert_close(
        path_b[:, :, -1, 0], block.downsample.conv(pre[:, :, -1:, :2].mean((2, 3), keepdim=True))[:, :, 0, 0]
    )


def test_stride_one_projection_has_no_pool() -> None:
    block = PreActBottleneck(64, 256, stride=1)
    assert isinstance(block.downsample, DownsampleAvg)
    assert isinstance(block.downsample.pool, nn.Identity)
    assert PreActBottleneck(256, 256).downsample is None


def test_projection_shortcut_reads_preactivated_input() -> None:
    block = PreActBottleneck(16, 32, stride=2).eval()
    seen: list[torch.Tensor] = []
    block.downsample.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0]))
    x = torch.randn(1, 16, 9, 9)
    with torch.no_grad():
        block(x)
        assert_close(seen[0], block.act1(block.norm1(x)))


def test_single_channel_model() -> None:
    for name in ("resnet_ours_tiny", "resnet50"):
        model = create_model(name, in_chans=1, **({} if name.startswith("resnet_ours") else SMALL)).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, 64, 64)).shape == (2, 1)


def test_channels_last_gives_the_same_outputs() -> None:
    model = create_model("resnet_ours_tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_drop_path_rises_linearly() -> None:
    model = create_model("resnet_ours_tiny", drop_path_rate=0.3)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for stage in model.stages for b in stage]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_torchscript_and_export() -> None:
    model = create_model("resnet_ours_tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        scripted = torch.jit.script(model)
        traced = torch.jit.trace(model, x)
        exported = torch.export.export(model, (x,))
        assert_close(scripted(x), want)
        assert_close(traced(x), want)
        assert_close(exported.module()(x), want)


def test_onnx_legacy_export(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = create_model("resnet_ours_tiny").eval()
    x = torch.randn(1, 3, 64, 64)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["image"], output_names=["logit"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-5)


def test_attention_maps() -> None:
    model = create_model("resnet_ours_tiny").eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = model(x)
    maps = attention_maps(model, x)
    assert [tuple(m.shape) for m in maps] == [(2, 1, 16, 24), (2, 1, 8, 12), (2, 1, 4, 6), (2, 1, 2, 3)]
    assert all(bool(((m > 0) & (m < 1)).all()) for m in maps)
    assert not any(m.requires_grad for m in maps)
    assert not model.stages[-1][-1].attn_spatial.gate._forward_hooks  # hooks removed
    with torch.no_grad():
        assert_close(model(x), want)  # forward unchanged


def test_attention_maps_rejects_baselines() -> None:
    with pytest.raises(ValueError, match="no spatial attention"):
        attention_maps(create_model("resnet50", **SMALL), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name", ["resnet_ours_tiny", "resnet50d"])
def test_gradcam_target_layer_is_last_feature_map(name: str) -> None:
    model = create_model(name, **({} if name == "resnet_ours_tiny" else SMALL)).eval()
    layer = gradcam_target_layer(model)
    assert layer is model.gradcam_target_layer()
    if name == "resnet50d":
        assert layer is model.layer4
    seen: list[torch.Tensor] = []
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_close(seen[-1] if model(x) is not None else None, model.forward_features(x))


def test_build_model_passes_set_fields() -> None:
    cfg = ModelConfig(name="resnet_ours_tiny", eca_k=3, depths=(1, 2, 1, 1), dropout=0.2, num_classes=2)
    model = build_model(cfg, in_chans=1)
    assert isinstance(model, ResNetOurs)
    assert [len(s) for s in model.stages] == [1, 2, 1, 1]
    assert {b.attn_channel.kernel_size for s in model.stages for b in s} == {3}
    assert model.stem.conv1.in_channels == 1
    assert model.head_drop.p == 0.2 and model.fc.out_features == 2
    # Unset architecture fields keep the variant's defaults.
    default = build_model(ModelConfig(name="resnet_ours_tiny"), in_chans=3)
    assert default.num_features == 512 and default.stem.conv1.out_channels == 8


@pytest.mark.parametrize("field", ["eca_k", "stem_channels", "width"])
def test_build_model_rejects_unsupported_fields(field: str) -> None:
    value = {"eca_k": 5, "stem_channels": (32, 64), "width": 0.5}[field]
    cfg = ModelConfig(name="resnet50", **{field: value})
    with pytest.raises(ValueError, match=rf"model\.{field}.*'resnet50'"):
        build_model(cfg, in_chans=3)


def test_build_model_baseline_defaults() -> None:
    model = build_model(ModelConfig(name="resnext50_32x4d", depths=(1, 1, 1, 1), drop_path=0.1), in_chans=3)
    assert isinstance(model, timm.models.resnet.ResNet)
    assert model.layer2[0].conv2.groups == 32
    assert not math.isclose(model.layer4[0].drop_path.drop_prob, 0.0)


def test_config_rejects_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        ModelConfig(name="resnet_theirs")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_eager_kernels_give_plain_autograd_gradients(device: str) -> None:
    model = create_model("resnet_ours_tiny").double().train().to(device)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, device=device)
    target = torch.tensor([[1.0], [0.0]], dtype=torch.float64, device=device)

    def grads(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with eager_kernels(fused):
            logits = model(x)
            nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    state = {k: v.clone() for k, v in model.state_dict().items()}
    logits_fused, fused = grads(True)
    model.load_state_dict(state)  # the same BN running statistics for the second pass
    logits_plain, plain = grads(False)
    assert_close(logits_fused, logits_plain, rtol=0, atol=0)
    for got, want in zip(fused, plain, strict=True):
        assert_close(got, want, rtol=1e-9, atol=1e-12)
