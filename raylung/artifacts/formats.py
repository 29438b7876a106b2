"""The deployable formats of an export: torch.export, TorchScript and ONNX, each verified.

Each format is checked against the eager model on inputs of batch 1 and 3 (the exporters trace
batch 2, so this also checks the batch axis really is dynamic); a format whose outputs differ
is dropped and recorded as failed, with the exporter's own output kept for the manifest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylung.config import RaylungConfig
from raylung.extras import has_extra, install_hint

log = logging.getLogger(__name__)

FORMAT_FILES = {"torch_export": "model.pt2", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
EXPORT_FORMATS = tuple(FORMAT_FILES)
# Logit agreement required of every exported format (fp32 kernels differ in summation order).
ATOL, RTOL = 1e-3, 1e-3
_EXAMPLE_BATCH, CHECK_BATCHES = 2, (1, 3)
_MAX_NOTES = 40


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
class Probe:
    """The batch an exporter traces, and check batches of other sizes with the eager outputs."""

    example: torch.Tensor
    checks: list[torch.Tensor]
    refs: list[np.ndarray]

    @classmethod
    def for_model(cls, model: torch.nn.Module, config: RaylungConfig) -> Probe:
        width, height = config.data.image_size
        generator = torch.Generator().manual_seed(0)
        shape = (config.data.in_chans, height, width)
        example = torch.randn(_EXAMPLE_BATCH, *shape, generator=generator)
        checks = [torch.randn(n, *shape, generator=generator) for n in CHECK_BATCHES]
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


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0][:500]}" if first else type(exc).__name__


# ---------------------------------------------------------------------------------- formats


def _batch_axis() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)


def _export_program(model: torch.nn.Module, probe: Probe, out: Path) -> dict[str, Any]:
    program = torch.export.export(model, (probe.example,), dynamic_shapes=_batch_axis())
    torch.export.save(program, out)
    reloaded = torch.export.load(out).module()
    with torch.no_grad():
        diff = probe.max_diff(lambda x: reloaded(x).numpy())
    return {"max_abs_diff": diff, "program": program}


def _export_torchscript(model: torch.nn.Module, probe: Probe, out: Path) -> dict[str, Any]:
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
    model: torch.nn.Module, probe: Probe, out: Path, program: torch.export.ExportedProgram | None = None
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


# Formats that need an optional extra; a default export skips them, saying which to install.
NEEDS_EXTRA = {"onnx": "export"}
_EXPORTERS = {"torch_export": _export_program, "torchscript": _export_torchscript, "onnx": _export_onnx}


def export_formats(
    model: torch.nn.Module, probe: Probe, staging: Path, formats: Collection[str]
) -> dict[str, dict[str, Any]]:
    """Try each requested format in turn; a failure is recorded and its file removed."""
    results: dict[str, dict[str, Any]] = {}
    program = None  # torch.export's program, reused by the ONNX exporter
    for name in EXPORT_FORMATS:
        if name not in formats:
            results[name] = {"status": "skipped", "reason": "not requested"}
            continue
        if name in NEEDS_EXTRA and not has_extra(NEEDS_EXTRA[name]):
            hint = install_hint(NEEDS_EXTRA[name])
            results[name] = {"status": "skipped", "reason": f"not installed: {hint}"}
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
