"""Turn a training checkpoint into a self-contained export directory, and load either back.

An export directory holds everything needed to rebuild and deploy the model::

    model.safetensors      weights (no pickle); with config.yaml, rebuilds the eager model
    config.yaml            the resolved RaylungConfig: model, preprocessing, and the run's data
    metrics.json           the run's state: monitor, best epoch, per-epoch history (+ extra metrics)
    learning_curves.png    the history, drawn (when there is one)
    reliability.png        calibration on the validation split, before and after temperature scaling
    model.pt2              torch.export program, dynamic batch axis       } each optional: a
    model.torchscript.pt   TorchScript, scripted (or traced if it can't)  } failure is recorded in
    model.onnx             ONNX, dynamic batch axis, checked with ORT     } the manifest, not fatal
    manifest.json          versions, sha256 of every file, input spec, threshold, calibration,
                           what was exported or skipped and why, and whether the data was synthetic

The temperature and the threshold are fitted on the run's validation split
(:mod:`raylung.artifacts.fitting`, by the config's ``export`` section); where that split is out
of reach the export records why and keeps temperature 1.0 and the rule's fixed threshold.

Each deployable format is verified against the eager model on inputs of batch 1 and 3 (the
exports trace batch 2, so this also checks the batch axis really is dynamic); a format whose
outputs differ is dropped and recorded as failed. The export is written to a staging folder
and renamed into place, so a crash never leaves half an export behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from raylung._version import __version__
from raylung.artifacts import checkpoint as ckpt
from raylung.artifacts.fitting import RELIABILITY_FILE, ValidationFit, fit_on_validation
from raylung.artifacts.formats import ATOL, CHECK_BATCHES, EXPORT_FORMATS, RTOL, Probe, export_formats
from raylung.artifacts.loader import (
    CONFIG_YAML,
    CURVES_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    data_is_synthetic,
    read_checkpoint_config,
    rebuild,
    sha256,
    to_json,
)
from raylung.artifacts.model_card import MODEL_CARD, data_facts, environment, write_model_card
from raylung.config import RaylungConfig
from raylung.config.schema import ExportConfig
from raylung.errors import ConfigError, DataError
from raylung.plan.effective import effective_pipeline

log = logging.getLogger(__name__)


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
    settings: ExportConfig | None = None,
    device: str | torch.device | None = None,
) -> Path:
    """Write the export of `checkpoint_dir` to `out` and return `out`.

    Args:
        checkpoint_dir: a training checkpoint (see :mod:`raylung.artifacts.checkpoint`).
        out: the export folder: new, empty or an earlier export (replaced), unless `overwrite`.
        metrics: extra metrics (e.g. test results) stored under ``metrics`` in metrics.json.
        formats: deployable formats to try, a subset of :data:`EXPORT_FORMATS`; the rest are
            recorded as skipped. Weights, config and metrics are always written.
        overwrite: replace `out` even if it holds something other than an export.
        settings: what to fit on the validation split, instead of the run's ``config.export``.
        device: where to run the model over the validation split (default: CUDA if present).
    """
    checkpoint_dir, out = Path(checkpoint_dir).expanduser(), Path(out).expanduser()
    _check_request(checkpoint_dir, out, formats, overwrite)
    config = read_checkpoint_config(checkpoint_dir)
    model = rebuild(config, checkpoint_dir / ckpt.MODEL_FILE)
    fit = fit_on_validation(model, config, settings or config.export, checkpoint_dir, device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        _write_export(staging, checkpoint_dir, model, config, metrics, formats, fit)
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
    fit: ValidationFit,
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
    title = f"{config.model.name}, validation split (n={fit.operating_point.n})"
    if data_is_synthetic(config):
        title += "\nSYNTHETIC DEMO DATA"
    fit.write_reliability(staging / RELIABILITY_FILE, title)
    results = export_formats(model, Probe.for_model(model, config), staging, formats)
    _write_manifest(staging, checkpoint_dir, config, results, fit)
    summary = ", ".join(f"{k} {v['status']}" for k, v in results.items())
    log.info("exported %s: %s", config.model.name, summary)


def _write_manifest(
    staging: Path, checkpoint_dir: Path, config: RaylungConfig, results: dict, fit: ValidationFit
) -> None:
    files = {
        p.name: {"sha256": sha256(p), "bytes": p.stat().st_size}
        for p in sorted(staging.iterdir())
        if p.is_file()
    }
    manifest = {
        "raylung_version": __version__,
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
            "probability": "sigmoid(logit / calibration.temperature) = P(cancer)",
        },
        "labels": {"0": "non_cancer", "1": "cancer"},
        **fit.manifest_entries(),  # threshold, calibration, operating_point
        "pipeline": effective_pipeline(config).to_json(),
        "data": data_facts(config),
        "environment": environment(),
        "model_card": f"{MODEL_CARD} (written from this manifest and the evaluation; not hashed)",
        "decision": "cancer when probability >= threshold",
        "tolerance": {"atol": ATOL, "rtol": RTOL, "checked_batches": list(CHECK_BATCHES)},
        "formats": {"safetensors": {"status": "ok", "file": ckpt.MODEL_FILE}, **results},
        "files": files,
    }
    (staging / MANIFEST_FILE).write_text(to_json(manifest))
    write_model_card(staging)


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
