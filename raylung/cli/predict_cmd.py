"""`raylung predict EXPORT IMAGE_OR_FOLDER... --out predictions.csv`: label new images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def predict(
    export: Annotated[
        Path, typer.Argument(metavar="EXPORT_DIR", help="Export folder (or training checkpoint folder).")
    ],
    inputs: Annotated[
        list[Path], typer.Argument(metavar="IMAGE_OR_FOLDER", help="Image files and/or folders.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write.")] = Path("predictions.csv"),
    threshold: Annotated[
        float, typer.Option("--threshold", min=0.0, max=1.0, help="Cancer when probability >= this.")
    ] = 0.5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 32,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Search folders recursively.")
    ] = True,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: auto).")] = None,
) -> None:
    """Write path,probability_cancer,predicted_label for every readable image; list unreadable ones."""
    from raylung.artifacts.predict import predict as run_prediction

    summary = run_prediction(
        export, inputs, out, threshold=threshold, batch_size=batch_size, recursive=recursive, device=device
    )
    console, errors = Console(), Console(stderr=True)
    if summary.synthetic_model:
        errors.print("[bold red]this model was trained on synthetic demo data[/]")
    console.print(
        f"{summary.n_predicted} image(s): {summary.n_cancer} cancer, {summary.n_non_cancer} non_cancer "
        f"(threshold {summary.threshold:g}) -> {summary.out_csv}"
    )
    if summary.unreadable:
        errors.print(f"[yellow]{len(summary.unreadable)} unreadable file(s) got no prediction:[/]")
        for path, reason in summary.unreadable:
            errors.print(f"  {path}: {reason}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
