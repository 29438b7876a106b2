"""The paper's own Table 3 (Kim & Kang 2023), shown beside every reproduction for reference.

Their data (35,769 private DAPI images) is not the user's: the numbers are a reference point,
not a target a different dataset should hit.
"""

from __future__ import annotations

METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1")

# raylung model name -> (paper's row label, accuracy, precision, recall, F1)
TABLE_3: dict[str, tuple[str, float, float, float, float]] = {
    "resnet50": ("ResNet(50)", 0.8148, 0.8005, 0.8558, 0.8272),
    "resnet50c": ("ResNetC(50)", 0.8119, 0.8062, 0.8409, 0.8232),
    "resnet50d": ("ResNetD(50)", 0.8155, 0.7930, 0.8697, 0.8296),
    "resnext50_32x4d": ("ResNext(50)", 0.7943, 0.8060, 0.7902, 0.7980),
    "resnet_ours50": ("ResNet-ours(50)", 0.8283, 0.8300, 0.8414, 0.8356),
}


def paper_row(model: str) -> dict[str, float] | None:
    row = TABLE_3.get(model)
    return None if row is None else dict(zip(METRICS, row[1:], strict=True))


def paper_label(model: str) -> str:
    return TABLE_3[model][0] if model in TABLE_3 else model
