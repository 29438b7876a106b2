"""Whether a training run compiles its model: ``train.compile: auto | true | false``.

``true`` always wraps the model in ``torch.compile``, ``false`` never does. ``auto`` compiles only
where the measured speed-up pays back the cold compile within the run::

    saving = planned steps x eager step seconds x (1 - 1 / speed-up)
    compile  iff  saving > cold compile seconds

with the eager step seconds of the measured profile scaled linearly by pixels per step (this
worker's batch x height x width) relative to the profile's measurement, and planned steps =
epochs x this worker's steps per epoch (capped by ``train.max_steps_per_epoch``). Planned steps
are an upper bound (early stopping or ASHA may end a run sooner); the scaled step time is a lower
bound at small GPU batches, which are launch-bound, so there the rule compiles a little later
than it could. A profile stands for its whole family at 50 layers:
shallower or narrower variants (ResNet-ours(26), ``model.depths``) are charged its step time
and its compile time alike.

The profiles are measurements per (device type, model family), kept in :data:`PROFILES` with
their source; a device with no profile (``mps``, ``xpu``) trains eagerly. A speed-up at or below
1 (both families on the CPU) never compiles, however long the run. Inductor's FX graph cache is
on by default, so a second trial on the same node with the same model and shapes pays far less
than the cold compile (7.5 s instead of 95 s for ResNet-ours(50) on an H200); the rule still
charges the cold figure, since it cannot know what the cache holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raylung.models.registry import get_model_entry

__all__ = ["PROFILES", "CompileDecision", "CompileProfile", "decide_compile", "model_family"]

Family = Literal["resnet_ours", "resnet"]


@dataclass(frozen=True)
class CompileProfile:
    """One measurement of eager vs compiled training steps."""

    eager_step_s: float  # eager train step (fwd + bwd + Adam) at `batch` x `height` x `width`
    batch: int
    height: int
    width: int
    speedup: float  # eager step time / compiled step time
    cold_compile_s: float  # first compile with an empty Inductor cache
    source: str

    @property
    def pixels(self) -> int:
        return self.batch * self.height * self.width


_CPU = "2 shared CPU cores, torch 2.14.1, 2 threads, channels_last (shared/README.md, 'Measured facts')"
_H200 = "NVIDIA H200, bf16 channels_last (benchmarks/reference/gpu_h200.json, docs/performance.md)"

PROFILES: dict[tuple[str, Family], CompileProfile] = {
    # 3.88 s eager vs 4.10 s compiled: compiling is slower on this CPU.
    ("cpu", "resnet_ours"): CompileProfile(3.88, 8, 240, 320, 3.88 / 4.10, 183.0, _CPU),
    # 2.30 s eager vs 2.55 s compiled.
    ("cpu", "resnet"): CompileProfile(2.30, 8, 240, 320, 2.30 / 2.55, 81.0, _CPU),
    # 770 vs 1031 images/s at batch 64; the first compile took 95 s.
    ("cuda", "resnet_ours"): CompileProfile(0.0832, 64, 240, 320, 1.34, 95.0, _H200),
    # 2634 vs 3534 images/s at batch 64. resnet50's cold compile was not recorded on the GPU:
    # ResNet-ours' 95 s stands in for it (on the CPU resnet50 compiles in less than half the time).
    ("cuda", "resnet"): CompileProfile(0.0242, 64, 240, 320, 1.34, 95.0, _H200),
}


@dataclass(frozen=True)
class CompileDecision:
    compile: bool
    reason: str  # one line with the arithmetic, for the log


def model_family(model_name: str) -> Family:
    """``resnet_ours`` for ResNet-ours of any depth, ``resnet`` for the timm baselines."""
    module = get_model_entry(model_name).module
    return "resnet_ours" if module.endswith(".resnet_ours") else "resnet"


def decide_compile(
    setting: bool | Literal["auto"],
    device_type: str,
    model_name: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    batch: int,
    height: int,
    width: int,
) -> CompileDecision:
    """Apply ``train.compile`` (see the module docstring) to one worker's planned run.

    `steps_per_epoch` and `batch` are this worker's (already capped by max_steps_per_epoch).
    """
    if setting is True:
        return CompileDecision(True, "train.compile: true")
    if setting is False:
        return CompileDecision(False, "train.compile: false")
    family = model_family(model_name)
    profile = PROFILES.get((device_type, family))
    if profile is None:
        return CompileDecision(
            False, f"train.compile: auto, no measured profile for {family} on {device_type}"
        )
    if profile.speedup <= 1:
        return CompileDecision(
            False,
            f"train.compile: auto, {family} on {device_type}: compiled steps measured no faster "
            f"(speed-up {profile.speedup:.3g}), never pays: eager",
        )
    steps = epochs * steps_per_epoch
    step_s = profile.eager_step_s * (batch * height * width) / profile.pixels
    saving = steps * step_s * (1.0 - 1.0 / profile.speedup)
    verdict = saving > profile.cold_compile_s
    reason = (
        f"train.compile: auto, {family} on {device_type}: {steps} steps x {step_s:.4g} s eager x "
        f"(1 - 1/{profile.speedup:.3g}) = {saving:.4g} s saved "
        f"{'>' if verdict else '<='} {profile.cold_compile_s:.0f} s cold compile: "
        f"{'compile' if verdict else 'eager'}"
    )
    return CompileDecision(verdict, reason)
