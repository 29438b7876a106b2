"""`raylung export CHECKPOINT_DIR --out DIR`: a training checkpoint -> a deployable export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

_STYLES = {"ok": "green", "failed": "red", "skipped": "yellow"}


def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            metavar="CHECKPOINT_DIR", help="Training checkpoint folder (model.safetensors, config.json)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export folder to write.")],
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="torch_export, torchscript or onnx (repeatable; default: all)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out even if it is not an export.")
    ] = False,
) -> None:
    """Write weights, config, metrics, torch.export / TorchScript / ONNX programs and a manifest."""
    from raylung.api import export_checkpoint
    from raylung.artifacts.formats import EXPORT_FORMATS, NEEDS_EXTRA
    from raylung.artifacts.loader import MANIFEST_FILE
    from raylung.extras import require_extra

    for name in formats or ():  # asked for by name: a missing extra is an error, not a skip
        if name in NEEDS_EXTRA:
            require_extra(NEEDS_EXTRA[name], f"--format {name}")
    # A plain line, not a spinner: the exporters' output is captured while they run, and a
    # spinner's refresh thread would be captured with it.
    Console(stderr=True).print(f"exporting {checkpoint} (tracing and checking each format)...")
    path = export_checkpoint(checkpoint, out, formats=formats or EXPORT_FORMATS, overwrite=overwrite)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    table = Table(title=f"export of {manifest['model']} -> {path}")
    for column in ("format", "status", "file", "detail"):
        table.add_column(column)
    for name, info in manifest["formats"].items():
        status, detail = info["status"], info.get("reason", "")
        if status == "ok" and "max_abs_diff" in info:
            detail = f"max |diff| {info['max_abs_diff']:.2g}" + (
                f", {info['method']}" if "method" in info else ""
            )
        table.add_row(name, f"[{_STYLES.get(status, '')}]{status}[/]", info.get("file", ""), detail)
    console = Console()
    console.print(table)
    if manifest.get("synthetic_data"):
        console.print("[bold red]trained on synthetic demo data[/]")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
