"""Load a trained model back: from an export directory or a raw training checkpoint.

Evaluation, prediction and explanation all start here. An export's weights are checked against
the sha256 in its manifest before they are used; a checkpoint is rebuilt from its config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file

from raylung.artifacts import checkpoint as ckpt
from raylung.config import RaylungConfig
from raylung.config.model_build import build_model
from raylung.errors import ConfigError, DataError

MANIFEST_FILE = "manifest.json"
CONFIG_YAML = "config.yaml"
METRICS_FILE = "metrics.json"
CURVES_FILE = "learning_curves.png"
DEFAULT_THRESHOLD = 0.5


@dataclass
class LoadedModel:
    """An eager model in eval mode with the config that built it and the export's manifest.

    ``manifest`` is empty when loaded from a raw training checkpoint.
    """

    model: torch.nn.Module
    config: RaylungConfig
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path = Path(".")
    source: str = "export"  # or "checkpoint"

    @property
    def threshold(self) -> float:
        """The operating point: P(cancer) at or above it is called cancer."""
        return float(self.manifest.get("threshold", DEFAULT_THRESHOLD))

    @property
    def temperature(self) -> float:
        """Temperature scaling fitted on the validation split at export (1.0: uncalibrated)."""
        return float(self.manifest.get("calibration", {}).get("temperature", 1.0))

    def probabilities(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """P(cancer) from raw logits: ``sigmoid(logit / temperature)``, or the raw sigmoid."""
        scale = self.temperature if calibrated else 1.0
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64) / scale))

    def require_binary(self) -> None:
        """Evaluation and prediction read one logit per image (cancer vs non-cancer)."""
        if self.config.model.num_classes != 1:
            raise ConfigError(
                f"{self.path}: model has {self.config.model.num_classes} outputs; raylung evaluates "
                "binary models with one logit (model.num_classes: 1)"
            )


def inference_device(requested: str | torch.device | None = None) -> torch.device:
    """The device to run a loaded model on: `requested`, else CUDA when present, else CPU."""
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"device {requested!r} is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} was asked for, but CUDA is not available here")
    return device


# ---------------------------------------------------------------------------------- loading


def _read_config_yaml(path: Path) -> RaylungConfig:
    try:
        return RaylungConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path} is not a valid raylung config: {exc}") from None


def read_checkpoint_config(directory: Path) -> RaylungConfig:
    try:
        return ckpt.load_config(directory)
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"{directory / ckpt.CONFIG_FILE} is not a valid raylung config: {exc}") from None


def rebuild(config: RaylungConfig, weights: Path) -> torch.nn.Module:
    model = build_model(config.model, config.data.in_chans)
    try:
        model.load_state_dict(load_file(str(weights)))
    except (RuntimeError, OSError) as exc:  # safetensors' SafetensorError is an OSError subclass
        raise DataError(f"{weights} does not fit model {config.model.name!r}: {exc}") from None
    return model.eval()


def load_export(path: str | Path) -> LoadedModel:
    """Rebuild the eager model from an export directory or a raw training checkpoint directory.

    An export is recognised by ``manifest.json`` + ``config.yaml``, a checkpoint by
    ``config.json``; both need ``model.safetensors``. An export's weights are checked against
    the sha256 in its manifest.
    """
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise DataError(f"model path {directory} is not a folder (expected an export or a checkpoint)")
    weights = directory / ckpt.MODEL_FILE
    is_export = (directory / MANIFEST_FILE).is_file() and (directory / CONFIG_YAML).is_file()
    if not weights.is_file() or not (is_export or (directory / ckpt.CONFIG_FILE).is_file()):
        raise DataError(
            f"{directory} is neither an export (manifest.json, config.yaml, model.safetensors) nor a "
            "training checkpoint (config.json, model.safetensors)"
        )
    if not is_export:
        config = read_checkpoint_config(directory)
        return LoadedModel(rebuild(config, weights), config, {}, directory, "checkpoint")
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        expected = manifest["files"][ckpt.MODEL_FILE]["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{directory / MANIFEST_FILE} is not a raylung export manifest ({exc!r})") from None
    if expected != sha256(weights):
        raise DataError(
            f"{weights} does not match the sha256 in its manifest: the file was changed or is corrupt"
        )
    config = _read_config_yaml(directory / CONFIG_YAML)
    return LoadedModel(rebuild(config, weights), config, manifest, directory, "export")


# ---------------------------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_json(document: Any) -> str:
    """Indented JSON with NaN/inf as null: an undefined metric (AUROC of one class) stays valid JSON."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, np.generic):
            return clean(value.item())
        return value

    # default=str: metrics handed in from Ray results may hold timestamps or paths.
    return json.dumps(clean(document), indent=1, allow_nan=False, default=str)


def data_is_synthetic(config: RaylungConfig) -> bool | None:
    """Whether the run's data root is the synthetic demo set; None when it is not on this machine."""
    from raylung.data import is_synthetic

    root = Path(config.data.root).expanduser()
    return is_synthetic(root) if root.is_dir() else None
