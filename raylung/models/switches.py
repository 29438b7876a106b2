"""Which of the paper's parts a ResNet-ours has: the ablation switches, checked once.

Each part of Kim & Kang's model (FReLU, ECA, spatial attention, the depthwise convolutions,
the 4x4 stem, the ResNet-D shortcut) can be switched off or swapped for ResNet's own, so
"which part matters" is a grid of variants rather than copies of the network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from raylung.models.layers import ACTIVATIONS, CHANNEL_ATTENTIONS

STEMS = ("paper", "resnet", "deep")
SHORTCUTS = ("avgpool", "conv")


@dataclass(frozen=True)
class Switches:
    """Which of the paper's parts a ResNet-ours has; the defaults are the paper's model.

    Args:
        activation: ``frelu`` (paper) or ``relu``, everywhere ResNet has a ReLU.
        channel_attention: ``eca`` (paper), ``se`` (squeeze-excite) or ``none``.
        spatial_attention: The 1x1-conv spatial attention after the channel attention.
        depthwise: The depthwise 3x3 convolutions before the two 1x1 convolutions.
        stem: ``paper`` (two 4x4 convs), ``resnet`` (one 7x7) or ``deep`` (three 3x3).
        shortcut: ``avgpool`` (ResNet-D: 2x2 average pool, then 1x1) or ``conv`` (stride-2 1x1).
    """

    activation: str = "frelu"
    channel_attention: str = "eca"
    spatial_attention: bool = True
    depthwise: bool = True
    stem: str = "paper"
    shortcut: str = "avgpool"

    def check(self) -> None:
        for name, value, allowed in (
            ("activation", self.activation, ACTIVATIONS),
            ("channel_attention", self.channel_attention, CHANNEL_ATTENTIONS),
            ("stem", self.stem, STEMS),
            ("shortcut", self.shortcut, SHORTCUTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        for name in ("spatial_attention", "depthwise"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")


SWITCH_NAMES: tuple[str, ...] = tuple(asdict(Switches()))
