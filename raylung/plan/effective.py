"""The effective pipeline of a config: what a run really trains, resolved once.

A config says *what was asked* (``policy: light``, ``stem_channels: [16, 32]``); the effective
pipeline says *what was built*: the augmentation transforms with their probabilities after
policy resolution, the model as its factory builds it (registered name, parameter count and an
architecture fingerprint), the input and the optimisation settings. Two configs that train the
same thing have equal pipelines, whatever their spelling, and a searched parameter that cannot
change what is trained is one whose values all give the same pipeline.

The pipeline is recorded wherever a run's config is (trial folder, W&B run config, trials table,
``results.json``, ``best.json``, the report), and ``train --best`` checks it rebuilt the same one.
Building it needs no data and no GPU: the model is built on PyTorch's ``meta`` device.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from raylung.config import DataConfig, RaylungConfig

PIPELINE_FILE = "pipeline.json"


@dataclass(frozen=True)
class ModelIdentity:
    """The model as built: which factory, how big, and a hash of its architecture."""

    name: str
    params: int
    fingerprint: str
    # Readable facts behind the fingerprint (stem widths, ECA kernel per stage, ...).
    arch: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EffectivePipeline:
    """Input, augmentation, model and optimisation of a run, as built."""

    input: dict[str, Any]
    augment: dict[str, float]  # transform -> probability, in pipeline order; absent = not built
    model: ModelIdentity
    optimization: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "digest": self.digest}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EffectivePipeline:
        return cls(
            input=dict(data["input"]),
            augment={k: float(v) for k, v in data["augment"].items()},
            model=ModelIdentity(**data["model"]),
            optimization=dict(data["optimization"]),
        )

    @property
    def digest(self) -> str:
        """A short hash of the whole pipeline: equal digests, same training."""
        return _sha(json.dumps(asdict(self), sort_keys=True, default=str))[:12]

    def differences(self, other: EffectivePipeline) -> list[str]:
        """Dotted names of what differs, e.g. ``augment.rotate90`` or ``model.fingerprint``."""
        mine, theirs = _flat(asdict(self)), _flat(asdict(other))
        return sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))

    def augment_text(self) -> str:
        return augment_text(self.augment)


def augment_text(augment: dict[str, float]) -> str:
    """Compact form for tables: ``hflip 0.5, vflip 0.5, rotate90 0.5``, or ``none``."""
    return ", ".join(f"{name} {p:.2g}" for name, p in augment.items()) or "none"


def effective_pipeline(cfg: RaylungConfig) -> EffectivePipeline:
    """Resolve `cfg` into what its run trains (no data read, no weights allocated)."""
    from raylung.data.pipeline_plan import normalisation, planned_augmentations

    data, train = cfg.data, cfg.train
    mean, std = normalisation(data)
    return EffectivePipeline(
        input={
            "image_size": list(data.image_size),
            "keep_aspect": data.keep_aspect,
            "in_chans": data.in_chans,
            "train_fraction": data.train_fraction,
            "mean": [round(v, 6) for v in mean],
            "std": [round(v, 6) for v in std],
            # only when on, so pipelines recorded before stain normalisation keep their digest
            **_stain_input(data),
        },
        augment={name: float(q) for name, q in planned_augmentations(data)},
        model=model_identity(cfg.model.model_dump_json(), data.in_chans),
        optimization={
            "optimizer": train.optimizer,
            "lr": train.lr,
            "weight_decay": train.weight_decay,
            "batch_size": train.batch_size,
            "pos_weight": train.pos_weight,
            "epochs": train.epochs,
            "patience": train.patience,
            "seed": train.seed,
        },
    )


def _stain_input(data: DataConfig) -> dict[str, Any]:
    """The stain normalisation as configured (a null reference: drawn from the training split)."""
    if data.stain_normalize == "none":
        return {}
    reference = None if data.stain_reference is None else str(data.stain_reference)
    return {"stain_normalize": data.stain_normalize, "stain_reference": reference}


@lru_cache(maxsize=256)
def model_identity(model_json: str, in_chans: int) -> ModelIdentity:
    """Build the model of a ModelConfig (as JSON, for the cache) on the meta device and hash it."""
    import torch

    from raylung.config import ModelConfig
    from raylung.config.model_build import build_model

    model_cfg = ModelConfig.model_validate_json(model_json)
    try:
        with torch.device("meta"):
            model = build_model(model_cfg, in_chans)
    except (RuntimeError, NotImplementedError):
        # A model whose constructor computes with its tensors cannot be built on meta: pay
        # for real weights once (the result is cached).
        model = build_model(model_cfg, in_chans)
    return ModelIdentity(
        name=model_cfg.name,
        params=sum(p.numel() for p in model.parameters()),
        fingerprint=architecture_fingerprint(model),
        arch=architecture_facts(model),
    )


def architecture_fingerprint(model: Any) -> str:
    """Hash of every module's type and settings and every tensor's name and shape.

    Two models with equal fingerprints compute the same function family: same layers, same
    widths, same kernel sizes, same dropout and attention settings. Weights do not enter it.
    """
    lines = [
        f"{name}:{type(m).__module__}.{type(m).__qualname__}({m.extra_repr()})"
        for name, m in model.named_modules()
    ]
    lines += [f"p {name}:{tuple(t.shape)}:{t.dtype}" for name, t in model.named_parameters()]
    lines += [f"b {name}:{tuple(t.shape)}" for name, t in model.named_buffers()]
    for name, module in model.named_modules():
        # Settings some layers keep as plain attributes rather than in extra_repr().
        for attr in ("kernel_size", "drop_prob", "p"):
            value = getattr(module, attr, None)
            if isinstance(value, (int, float, tuple)):
                lines.append(f"a {name}.{attr}={value}")
    return _sha("\n".join(lines))[:16]


def architecture_facts(model: Any) -> dict[str, Any]:
    """Readable settings as built, for messages: stem widths and ECA kernel per stage."""
    from torch import nn

    facts: dict[str, Any] = {}
    stem = getattr(model, "stem", None)
    if isinstance(stem, nn.Module):
        # Dense convs only: FReLU's depthwise convs repeat the widths.
        convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
        facts["stem_channels"] = [m.out_channels for m in convs]
    stages = getattr(model, "stages", None)
    if isinstance(stages, nn.Sequential):
        facts["stage_channels"] = [
            getattr(getattr(s[-1], "conv3", None), "out_channels", None) for s in stages
        ]
        kernels = [getattr(getattr(stage[0], "attn_channel", None), "kernel_size", None) for stage in stages]
        if any(k is not None for k in kernels):
            facts["eca_k"] = kernels
    return facts


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key != "arch":
            out.update(_flat(value, path + "."))
        else:
            out[path] = json.dumps(value, sort_keys=True, default=str)
    return out
