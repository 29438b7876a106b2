"""Turn a training checkpoint into a self-contained export directory, and load either back.

An export directory holds everything needed to rebuild and deploy the model::

    model.safetensors      weights (no pickle); with config.yaml, rebuilds the eager model
    config.yaml            the resolved RaylungConfig: model, preprocessing, and the run's data
    metrics.json           the run's state: monitor, best epoch, per-epoch history (+ extra metrics)
    learning_curves.png    the history, drawn (when there is one)
    model.pt2              torch.export program, dynamic batch axis       } each optional: a
    model.torchscript.pt   TorchScript, scripted (or traced if it can't)  } failure is recorded in
    model.onnx             ONNX, dynamic batch axis, checked with ORT     } the manifest, not fatal
    manifest.json          versions, sha256 of every file, input spec, threshold, what was
                           exported or skipped and why, and whether the data was synthetic

Each deployable format is verified against the eager model on inputs of batch 1 and 3 (the
exports trace batch 2, so this also checks the batch axis really is dynamic); a format whose
outputs differ is dropped and recorded as failed. The export is written to a staging folder
and renamed into place, so a crash never leaves half an export behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

import raylung
from raylung.config import RaylungConfig
from raylung.errors import ConfigError, DataError
from raylung.models import build_model
from raylung.train import state as ckpt

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CONFIG_YAML = "config.yaml"
METRICS_FILE = "metrics.json"
CURVES_FILE = "learning_curves.png"
FORMAT_FILES = {"torch_export": "model.pt2", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
EXPORT_FORMATS = tuple(FORMAT_FILES)
DEFAULT_THRESHOLD = 0.5
# Logit agreement required of every exported format (fp32 kernels differ in summation order).
ATOL, RTOL = 1e-3, 1e-3
_EXAMPLE_BATCH, _CHECK_BATCHES = 2, (1, 3)
_MAX_NOTES = 40


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
        return float(self.manifest.get("threshold", DEFAULT_THRESHOLD))

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


def _read_checkpoint_config(directory: Path) -> RaylungConfig:
    try:
        return ckpt.load_config(directory)
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"{directory / ckpt.CONFIG_FILE} is not a valid raylung config: {exc}") from None


def _rebuild(config: RaylungConfig, weights: Path) -> torch.nn.Module:
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
        config = _read_checkpoint_config(directory)
        return LoadedModel(_rebuild(config, weights), config, {}, directory, "checkpoint")
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
    return LoadedModel(_rebuild(config, weights), config, manifest, directory, "export")


# ---------------------------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _captured(notes: list[str]) -> Iterator[None]:
    """Keep an exporter's warnings, prints and native (C++) output off the terminal.

    Python warnings are recorded; stdout/stderr are redirected at the file-descriptor level
    too, because the ONNX and TorchScript exporters also write from C++. Unique lines land in
    `notes` (for the manifest) and the debug log.
    """
    with (
        tempfile.TemporaryFile(mode="w+b") as sink,
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(io.StringIO()) as out,
        contextlib.redirect_stderr(io.StringIO()) as err,
    ):
        warnings.simplefilter("always")
        try:
            with _fds_to(sink):
                yield
        finally:
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace") + out.getvalue() + err.getvalue()
            lines = [f"{w.category.__name__}: {w.message}" for w in caught] + text.splitlines()
            unique = [line.strip() for line in dict.fromkeys(lines) if line.strip()]
            for line in unique:
                log.debug("exporter: %s", line)
            notes.extend(unique[:_MAX_NOTES])
            if len(unique) > _MAX_NOTES:
                notes.append(f"... {len(unique) - _MAX_NOTES} more line(s) (run with --verbose for all)")


@contextlib.contextmanager
def _fds_to(sink: Any) -> Iterator[None]:
    """Point file descriptors 1 and 2 at `sink`; a no-op where they cannot be duplicated."""
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()  # what was printed before belongs on the terminal
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # closed descriptors (some daemons): nothing native reaches a terminal
        yield
        return
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()  # buffered text written during the export goes to the sink
        for fd, saved_fd in zip((1, 2), saved, strict=True):
            os.dup2(saved_fd, fd)
            os.close(saved_fd)


@dataclass(frozen=True)
class _Probe:
    """The batch an exporter traces, and check batches of other sizes with the eager outputs."""

    example: torch.Tensor
    checks: list[torch.Tensor]
    refs: list[np.ndarray]

    @classmethod
    def for_model(cls, model: torch.nn.Module, config: RaylungConfig) -> _Probe:
        width, height = config.data.image_size
        generator = torch.Generator().manual_seed(0)
        shape = (config.data.in_chans, height, width)
        example = torch.randn(_EXAMPLE_BATCH, *shape, generator=generator)
        checks = [torch.randn(n, *shape, generator=generator) for n in _CHECK_BATCHES]
        with torch.no_grad():
            refs = [model(x).numpy().astype(np.float64) for x in checks]
        return cls(example, checks, refs)

    def max_diff(self, run: Callable[[torch.Tensor], np.ndarray]) -> float:
        """Largest |exported - eager| over the check batches; raises if any is out of tolerance."""
        worst = 0.0
        for images, expected in zip(self.checks, self.refs, strict=True):
            got = np.asarray(run(images), dtype=np.float64)
            if got.shape != expected.shape:
                raise RuntimeError(
                    f"output shape {got.shape} for input {tuple(images.shape)}, expected {expected.shape}"
                )
            diff = np.abs(got - expected)
            worst = max(worst, float(diff.max(initial=0.0)))
            if not np.all(diff <= ATOL + RTOL * np.abs(expected)):
                raise RuntimeError(
                    f"outputs differ from the eager model by up to {worst:.3g} (atol {ATOL}, rtol {RTOL})"
                )
        return worst


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


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0][:500]}" if first else type(exc).__name__


# ---------------------------------------------------------------------------------- formats


def _batch_axis() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)


def _export_program(model: torch.nn.Module, probe: _Probe, out: Path) -> dict[str, Any]:
    program = torch.export.export(model, (probe.example,), dynamic_shapes=_batch_axis())
    torch.export.save(program, out)
    reloaded = torch.export.load(out).module()
    with torch.no_grad():
        diff = probe.max_diff(lambda x: reloaded(x).numpy())
    return {"max_abs_diff": diff, "program": program}


def _export_torchscript(model: torch.nn.Module, probe: _Probe, out: Path) -> dict[str, Any]:
    """Script when the model allows it (keeps control flow); otherwise trace at the config's
    image size, where input-size-dependent code (SAME padding) is frozen for that size."""
    info: dict[str, Any] = {}
    try:
        module = torch.jit.script(model)
        info["method"] = "script"
    except Exception as exc:  # scripting rejects much ordinary Python; tracing still works
        info["method"] = "trace"
        info["script_error"] = _describe(exc)
        info["note"] = f"traced at {tuple(probe.example.shape[2:])} (H, W); only that image size works"
        with torch.no_grad():
            module = torch.jit.trace(model, probe.example)
    torch.jit.save(module, str(out))
    reloaded = torch.jit.load(str(out), map_location="cpu").eval()
    with torch.no_grad():
        info["max_abs_diff"] = probe.max_diff(lambda x: reloaded(x).numpy())
    return info


def _export_onnx(
    model: torch.nn.Module, probe: _Probe, out: Path, program: torch.export.ExportedProgram | None = None
) -> dict[str, Any]:
    """torch.onnx (dynamo) from the already exported program when there is one; then the
    exporter's symbolic batch dimension is renamed ``batch`` and ONNX Runtime checks it."""
    import onnx
    import onnxruntime as ort

    names = {"input_names": ["image"], "output_names": ["logit"]}
    if program is not None:
        onnx_program = torch.onnx.export(program, (probe.example,), None, dynamo=True, **names)
    else:
        onnx_program = torch.onnx.export(
            model, (probe.example,), None, dynamo=True, dynamic_shapes=_batch_axis(), **names
        )
    proto = onnx_program.model_proto
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save_model(proto, str(out))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    diff = probe.max_diff(lambda x: session.run(None, {name: x.numpy()})[0])
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"max_abs_diff": diff, "opset": opset, "input": name, "output": session.get_outputs()[0].name,
            "onnxruntime": ort.__version__}  # fmt: skip


_EXPORTERS = {"torch_export": _export_program, "torchscript": _export_torchscript, "onnx": _export_onnx}


# ---------------------------------------------------------------------------------- export


def _input_spec(config: RaylungConfig) -> dict[str, Any]:
    from raylung.data.transforms import normalisation

    data = config.data
    mean, std = normalisation(data)
    width, height = data.image_size
    return {
        "name": "image",
        "shape": ["batch", data.in_chans, height, width],
        "layout": "NCHW",
        "dtype": "float32",
        "image_size": [width, height],
        "channels": "RGB" if data.in_chans == 3 else "gray (ITU-R BT.601 luminance)",
        "keep_aspect": data.keep_aspect,
        "resize": "INTER_AREA to shrink, INTER_LINEAR to grow; keep_aspect pads black around the centre",
        "mean": list(mean),
        "std": list(std),
        "normalisation": "(pixel / 255 - mean) / std per channel",
    }


def data_is_synthetic(config: RaylungConfig) -> bool | None:
    """Whether the run's data root is the synthetic demo set; None when it is not on this machine."""
    from raylung.data import is_synthetic

    root = Path(config.data.root).expanduser()
    return is_synthetic(root) if root.is_dir() else None


def _metrics_document(directory: Path, config: RaylungConfig, extra: dict | None) -> dict[str, Any]:
    state = ckpt.load_state(directory) if (directory / ckpt.STATE_FILE).is_file() else ckpt.TrainState()
    by_epoch = {int(row.get("epoch", i + 1)): row for i, row in enumerate(state.history)}
    return {
        "monitor": config.train.monitor,
        "monitor_mode": config.train.monitor_mode,
        "epochs_completed": state.epoch,
        "best_epoch": state.best_epoch,
        "best_metric": state.best_metric,
        "stopped_early": state.stopped_early,
        "best": by_epoch.get(state.best_epoch or -1),
        "last": state.history[-1] if state.history else None,
        "history": state.history,
        "metrics": extra or {},
    }


def _check_request(checkpoint_dir: Path, out: Path, formats: Collection[str], overwrite: bool) -> None:
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ConfigError(
            f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(EXPORT_FORMATS)}"
        )
    needed = (ckpt.MODEL_FILE, ckpt.CONFIG_FILE)
    if not all((checkpoint_dir / name).is_file() for name in needed):
        raise DataError(f"{checkpoint_dir} is not a training checkpoint: it needs {' and '.join(needed)}")
    if out.resolve() == checkpoint_dir.resolve():
        raise DataError("the export folder must differ from the checkpoint folder")
    # An earlier export is replaced (a resumed search re-exports its best trial); anything else
    # already there might be the user's, so it is only replaced when asked.
    replaceable = not out.exists() or (
        out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST_FILE).is_file())
    )
    if not (replaceable or overwrite):
        raise DataError(f"{out} exists and is not a raylung export; choose a new folder or pass overwrite")


def export_checkpoint(
    checkpoint_dir: Path,
    out: Path,
    *,
    metrics: dict | None = None,
    formats: Collection[str] = EXPORT_FORMATS,
    overwrite: bool = False,
) -> Path:
    """Write the export of `checkpoint_dir` to `out` and return `out`.

    Args:
        checkpoint_dir: a training checkpoint (see :mod:`raylung.train.state`).
        out: the export folder: new, empty or an earlier export (replaced), unless `overwrite`.
        metrics: extra metrics (e.g. test results) stored under ``metrics`` in metrics.json.
        formats: deployable formats to try, a subset of :data:`EXPORT_FORMATS`; the rest are
            recorded as skipped. Weights, config and metrics are always written.
        overwrite: replace `out` even if it holds something other than an export.
    """
    checkpoint_dir, out = Path(checkpoint_dir).expanduser(), Path(out).expanduser()
    _check_request(checkpoint_dir, out, formats, overwrite)
    config = _read_checkpoint_config(checkpoint_dir)
    model = _rebuild(config, checkpoint_dir / ckpt.MODEL_FILE)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        _write_export(staging, checkpoint_dir, model, config, metrics, formats)
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_export(
    staging: Path,
    checkpoint_dir: Path,
    model: torch.nn.Module,
    config: RaylungConfig,
    metrics: dict | None,
    formats: Collection[str],
) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(staging / ckpt.MODEL_FILE), metadata={"raylung_model": config.model.name})
    header = "# Resolved raylung config of the exported run: rebuilds the model and its preprocessing.\n"
    dumped = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    (staging / CONFIG_YAML).write_text(header + dumped)
    document = _metrics_document(checkpoint_dir, config, metrics)
    (staging / METRICS_FILE).write_text(to_json(document))
    if document["history"]:
        from raylung.plots import learning_curves

        learning_curves(document["history"], staging / CURVES_FILE, monitor=config.train.monitor)
    results = _export_formats(model, _Probe.for_model(model, config), staging, formats)
    _write_manifest(staging, checkpoint_dir, config, results)
    summary = ", ".join(f"{k} {v['status']}" for k, v in results.items())
    log.info("exported %s: %s", config.model.name, summary)


def _export_formats(
    model: torch.nn.Module, probe: _Probe, staging: Path, formats: Collection[str]
) -> dict[str, dict[str, Any]]:
    """Try each requested format in turn; a failure is recorded and its file removed."""
    results: dict[str, dict[str, Any]] = {}
    program = None  # torch.export's program, reused by the ONNX exporter
    for name in EXPORT_FORMATS:
        if name not in formats:
            results[name] = {"status": "skipped", "reason": "not requested"}
            continue
        notes: list[str] = []
        target = staging / FORMAT_FILES[name]
        extra = {"program": program} if name == "onnx" else {}
        try:
            with _captured(notes):
                info = _EXPORTERS[name](model, probe, target, **extra)
            program = info.pop("program", program)
            results[name] = {"status": "ok", "file": target.name, **info}
        except Exception as exc:  # any exporter failure is recorded; the export goes on
            target.unlink(missing_ok=True)
            results[name] = {"status": "failed", "reason": _describe(exc)}
            log.debug("%s export failed", name, exc_info=True)
        results[name]["exporter_output"] = notes
    return results


def _write_manifest(staging: Path, checkpoint_dir: Path, config: RaylungConfig, results: dict) -> None:
    files = {
        p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(staging.iterdir())
        if p.is_file()
    }
    manifest = {
        "raylung_version": raylung.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_checkpoint": str(checkpoint_dir.resolve()),
        "model": config.model.name,
        "synthetic_data": data_is_synthetic(config),
        "data_root": str(config.data.root),
        "input": _input_spec(config),
        "output": {
            "name": "logit",
            "shape": ["batch", config.model.num_classes],
            "probability": "sigmoid(logit) = P(cancer)",
        },
        "labels": {"0": "non_cancer", "1": "cancer"},
        "threshold": DEFAULT_THRESHOLD,
        "decision": "cancer when probability >= threshold",
        "tolerance": {"atol": ATOL, "rtol": RTOL, "checked_batches": list(_CHECK_BATCHES)},
        "formats": {"safetensors": {"status": "ok", "file": ckpt.MODEL_FILE}, **results},
        "files": files,
    }
    (staging / MANIFEST_FILE).write_text(to_json(manifest))


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished staging folder to `out`, replacing an old export only at the end."""
    # mkdtemp (and safetensors) create owner-only entries; an export is shared like any output.
    # Reading the umask means setting it; the two calls restore it at once.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    for path in staging.iterdir():
        os.chmod(path, 0o666 & ~umask)
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        os.replace(old, out)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
