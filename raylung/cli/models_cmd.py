"""`raylung models`: the registered models with their size and cost at the paper's input."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models(
    height: int = typer.Option(240, min=16, help="Input height for the GFLOPs column."),
    width: int = typer.Option(320, min=16, help="Input width for the GFLOPs column."),
    in_chans: int = typer.Option(3, min=1, help="Input channels."),
) -> None:
    """List registered models: parameters (M) and GFLOPs (2 x MACs) for one logit."""
    import torch

    from raylung.models import count_parameters, create_model, gflops, list_models

    table = Table(title=f"raylung models (input {in_chans}x{height}x{width}, one logit)")
    table.add_column("model")
    table.add_column("params (M)", justify="right")
    table.add_column("GFLOPs (2xMACs)", justify="right")
    table.add_column("source")
    for name in list_models():
        # Built on the meta device: shapes only, so counting costs no compute or memory.
        with torch.device("meta"):
            model = create_model(name, in_chans=in_chans, num_classes=1)
        source = "timm" if type(model).__module__.endswith("baselines") else "raylung"
        table.add_row(
            name,
            f"{count_parameters(model) / 1e6:.2f}",
            f"{gflops(model, (1, in_chans, height, width)):.2f}",
            source,
        )
    Console().print(table)
