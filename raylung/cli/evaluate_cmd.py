"""`raylung evaluate MODEL --split test`: metrics with bootstrap CIs, per-subclass table, plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

_NAMES = {"accuracy": "accuracy", "precision": "precision", "recall": "recall (sensitivity)",
          "f1": "F1", "auroc": "AUROC", "loss": "loss (BCE)"}  # fmt: skip


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def evaluate(
    model: Annotated[
        Path, typer.Argument(metavar="EXPORT_OR_CHECKPOINT", help="Export or training checkpoint folder.")
    ],
    split: Annotated[str, typer.Option("--split", help="train | validation | test.")] = "test",
    splits: Annotated[
        str | None, typer.Option("--splits", help="Splits CSV (or URI) instead of the run's own.")
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Where the images are now, if they moved.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: evaluation_<split>).")
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", min=0.0, max=1.0, help="Cancer when probability >= this.")
    ] = 0.5,
    n_boot: Annotated[
        int, typer.Option("--n-boot", min=0, help="Bootstrap resamples for the 95% CIs (0: none).")
    ] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 32,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: auto).")] = None,
) -> None:
    """Evaluate a model on one split; writes metrics.json, predictions.csv and two PNGs."""
    from raylung.artifacts.evaluate import evaluate as run_evaluation

    report = run_evaluation(
        model, split, splits_file=splits, data_root=data_root, out_dir=out or Path(f"evaluation_{split}"),
        batch_size=batch_size, threshold=threshold, n_boot=n_boot, device=device,
    )  # fmt: skip
    console = Console()
    if report.synthetic:
        console.print("[bold red]synthetic demo data: these numbers mean nothing clinically[/]")
    table = Table(
        title=f"{report.model} on {report.split}: {report.n} images, {report.n_groups} groups, "
        f"threshold {report.threshold:g}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI (groups resampled)", justify="right")
    for key, label in _NAMES.items():
        low, high = report.intervals.get(key, (None, None))
        ci = f"{_fmt(low)} - {_fmt(high)}" if low is not None else "-"
        table.add_row(label, _fmt(report.metrics.get(key)), ci)
    console.print(table)
    c = report.confusion
    console.print(f"confusion: TP {c.tp}  FN {c.fn}  TN {c.tn}  FP {c.fp}")
    if report.per_subclass:
        sub = Table(title="per subclass (recall for cancer subclasses, specificity for non-cancer)")
        sub.add_column("subclass", no_wrap=True)
        sub.add_column("label", no_wrap=True)
        for column in ("n", "accuracy", "recall", "specificity", "mean p"):
            sub.add_column(column, justify="right")
        for s in report.per_subclass:
            recall = _fmt(s.rate) if s.rate_name == "recall" else "-"
            specificity = _fmt(s.rate) if s.rate_name == "specificity" else "-"
            sub.add_row(
                s.name, s.label, str(s.n), _fmt(s.accuracy), recall, specificity, _fmt(s.mean_probability)
            )
        console.print(sub)
    if report.skipped:
        Console(stderr=True).print(f"[yellow]{len(report.skipped)} unreadable image(s) were left out[/]")
    console.print(f"wrote {', '.join(str(p) for p in report.files.values())}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
