"""`raylung explain EXPORT IMAGE_OR_FOLDER... --out DIR`: attention and Grad-CAM figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def explain(
    export: Annotated[
        Path, typer.Argument(metavar="EXPORT_DIR", help="Export folder (or training checkpoint folder).")
    ],
    inputs: Annotated[
        list[Path], typer.Argument(metavar="IMAGE_OR_FOLDER", help="Image files and/or folders.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the PNGs and explanations.json.")
    ] = Path("explanations"),
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold", min=0.0, max=1.0, help="Cancer when probability >= this (default: the export's)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per pass.")] = 8,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Search folders recursively.")
    ] = True,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: auto).")] = None,
) -> None:
    """Draw each image as the model saw it with its per-stage spatial attention (ResNet-ours) and
    a Grad-CAM of the cancer logit, titled with P(cancer) and the label; index them in JSON."""
    from raylung.explain import INDEX_FILE, explain_images
    from raylung.extras import require_extra

    require_extra("explain", "raylung explain (Grad-CAM)")

    explanations = explain_images(
        export, inputs, out, threshold=threshold, recursive=recursive, batch_size=batch_size, device=device
    )
    n_cancer = sum(e.label == "cancer" for e in explanations)
    Console().print(
        f"{len(explanations)} figure(s): {n_cancer} cancer, {len(explanations) - n_cancer} non_cancer "
        f"-> {out} (index {out / INDEX_FILE})",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("explain")(explain)
