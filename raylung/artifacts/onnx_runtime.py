"""Run an export's ``model.onnx`` with ONNX Runtime: the deployable model, not the eager one.

A site that deploys the ONNX file should be able to check that it calls the same images the
same way as the model that was evaluated. ``raylung predict --runtime onnx`` runs it on exactly
the batches the torch runtime gets (decoding, resizing, normalisation and batching stay in
:mod:`raylung.artifacts.predict`); only the forward pass differs.

Agreement: at export the ONNX logits were checked against the eager model to
``manifest["tolerance"]`` (atol 1e-3 + rtol 1e-3 on logits: fp32 kernels sum in different
orders). Probabilities are then within :data:`PROBABILITY_ATOL` of torch's (a logit error of e
moves sigmoid(z / T) by at most e / 4T). Measured on all 1,000 LC25000 dev tiles, every TTA
view, with ResNet-ours(50) and ResNet-50d trained on them: at most 2.7e-7 (logits 1.1e-5).

The export is still loaded by :func:`raylung.artifacts.loader.load_export` (config, threshold,
temperature, weights' sha256); the eager model it rebuilds is not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from raylung.artifacts.formats import FORMAT_FILES
from raylung.artifacts.loader import sha256
from raylung.errors import ConfigError, DataError

__all__ = ["PROBABILITY_ATOL", "OnnxLogits", "onnx_model_path", "onnx_providers"]

PROBABILITY_ATOL = 1e-4  # |P_onnx - P_torch| that raylung's tests hold the ONNX runtime to
_CPU, _CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def onnx_model_path(export_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """The export's verified ONNX file; a clear error when the export has none.

    An export records each format's outcome; ONNX export may have failed (an unsupported
    operator) or been skipped, and a training checkpoint has no manifest at all.
    """
    export_dir = Path(export_dir)
    fix = f"re-export with `raylung export CHECKPOINT --out {export_dir} -f onnx`, or use --runtime torch"
    if not manifest:
        raise DataError(f"{export_dir} is a training checkpoint, not an export: it has no model.onnx; {fix}")
    info = manifest.get("formats", {}).get("onnx") or {"status": "not recorded"}
    if info.get("status") != "ok":
        reason = f" ({info['reason']})" if info.get("reason") else ""
        raise DataError(
            f"{export_dir} has no ONNX model: its ONNX export {info.get('status')}{reason}; {fix}"
        )
    path = export_dir / str(info.get("file", FORMAT_FILES["onnx"]))
    if not path.is_file():
        raise DataError(f"{path} is missing, though the manifest records an ONNX export; {fix}")
    expected = manifest.get("files", {}).get(path.name, {}).get("sha256")
    if expected is not None and expected != sha256(path):
        raise DataError(
            f"{path} does not match the sha256 in its manifest: the file was changed or is corrupt"
        )
    return path


def onnx_providers(device: str | None = None) -> list[str | tuple[str, dict[str, Any]]]:
    """Execution providers for `device`: CPU by default; CUDA only when asked and installed."""
    name = "cpu" if device is None else str(device)
    if name == "cpu":
        return [_CPU]
    kind, _, index = name.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ConfigError(f"device {device!r}: the ONNX runtime runs on cpu, cuda or cuda:N")
    available = ort.get_available_providers()
    if _CUDA not in available:
        raise ConfigError(
            f"device {device!r} was asked for, but this onnxruntime has no {_CUDA} (it has "
            f"{', '.join(available)}); install onnxruntime-gpu, or use --device cpu"
        )
    return [(_CUDA, {"device_id": int(index or 0)}), _CPU]


class OnnxLogits:
    """An (N, C, H, W) float32 batch -> its N logits, by an ONNX Runtime session.

    Args:
        export_dir: the export folder.
        manifest: its manifest (``LoadedModel.manifest``), which says whether ONNX was exported.
        device: ``cpu`` (default) or ``cuda[:N]``; CUDA needs onnxruntime-gpu.
    """

    def __init__(self, export_dir: str | Path, manifest: dict[str, Any], device: str | None = None) -> None:
        self.path = onnx_model_path(export_dir, manifest)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about unused initialisers
        self.session = ort.InferenceSession(str(self.path), options, providers=onnx_providers(device))
        self.input_name = self.session.get_inputs()[0].name

    @property
    def providers(self) -> list[str]:
        """The providers the session really uses, best first."""
        return list(self.session.get_providers())

    def __call__(self, batch: Any) -> np.ndarray:
        """Logits (N,) float32; `batch` is an array or a CPU tensor (read through ``__array__``)."""
        array = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: array})[0].reshape(-1)
