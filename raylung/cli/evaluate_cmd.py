"""`raylung evaluate MODEL --split test`: calibrated metrics at the operating point and at 0.5 with
stated intervals, calibration, per-group and per-subclass tables, TTA, plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

_NAMES = {"accuracy": "accuracy", "precision": "precision", "recall": "recall (sensitivity)",
          "specificity": "specificity", "f1": "F1", "auroc": "AUROC"}  # fmt: skip


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
        float | None,
        typer.Option(
            "--threshold", min=0.0, max=1.0, help="Cancer when probability >= this (default: the export's)."
        ),
    ] = None,
    n_boot: Annotated[
        int, typer.Option("--n-boot", min=0, help="Bootstrap resamples for the 95% CIs (0: none).")
    ] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 32,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: auto).")] = None,
    tta: Annotated[
        bool, typer.Option("--tta/--no-tta", help="Also score the mean over flips and rotations.")
    ] = False,
    calibrated: Annotated[
        bool, typer.Option("--calibrated/--raw", help="Apply the export's temperature (default) or not.")
    ] = True,
    group_rule: Annotated[
        str, typer.Option("--group-rule", help="Group call: mean (probability) or fraction (of tiles).")
    ] = "mean",
    group_cutoff: Annotated[
        float, typer.Option("--group-cutoff", min=0.0, max=1.0, help="With fraction: share of cancer tiles.")
    ] = 0.5,
    update_card: Annotated[
        bool, typer.Option("--update-card", help="Record a test evaluation in the export's MODEL_CARD.md.")
    ] = False,
) -> None:
    """Evaluate a model on one split; writes metrics.json, predictions.csv and two PNGs."""
    from raylung.api import evaluate as run_evaluation

    report = run_evaluation(
        model, split, splits_file=splits, data_root=data_root, out_dir=out or Path(f"evaluation_{split}"),
        batch_size=batch_size, threshold=threshold, n_boot=n_boot, device=device, tta=tta,
        calibrated=calibrated, group_rule=group_rule, group_cutoff=group_cutoff, update_card=update_card,
    )  # fmt: skip
    console = Console()
    if report.synthetic:
        console.print("[bold red]synthetic demo data: these numbers mean nothing clinically[/]")
    for warning in report.warnings:
        console.print(f"[yellow]{warning}[/]")
    for at in report.at_thresholds:
        table = Table(
            title=f"{report.model} on {report.split}: {report.n} images, {report.n_groups} groups, "
            f"threshold {at.threshold:.4g} ({at.source})"
        )
        for column in ("metric", "value", "95% CI", "how"):
            table.add_column(column, justify="left" if column in ("metric", "how") else "right")
        for key, label in _NAMES.items():
            interval = at.intervals.get(key)
            ci = f"{_fmt(interval.low)} - {_fmt(interval.high)}" if interval else "-"
            table.add_row(label, _fmt(at.metrics.get(key)), ci, interval.method if interval else "")
        console.print(table)
    cal = report.calibration
    console.print(
        f"calibration on {report.split}: temperature {cal['temperature']:.3g}; "
        f"ECE {_fmt(cal['ece_raw'])} raw, "
        f"{_fmt(cal['ece_calibrated'])} calibrated; Brier {_fmt(cal['brier_raw'])} raw, "
        f"{_fmt(cal['brier_calibrated'])} calibrated; loss {_fmt(report.metrics['loss'])}"
    )
    if report.groups:
        g, cis = report.groups, report.groups["confidence_intervals"]
        cells = [
            f"{k} {_fmt(v)}" + (f" [{_fmt(cis[k][0])} - {_fmt(cis[k][1])}]" if k in cis else "")
            for k, v in g["metrics"].items()
        ]
        console.print(f"per group ({g['n']} groups; {g['aggregation']}): " + ", ".join(cells))
    if report.tta:
        d, ci = report.tta["delta"], report.tta["delta_confidence_intervals"]
        console.print(f"TTA ({'+'.join(report.tta['views'])}): " + ", ".join(
            f"{k} {d[k]:+.3f}" + (f" [{ci[k][0]:+.3f}, {ci[k][1]:+.3f}]" if k in ci else "")
            for k in ("accuracy", "f1", "auroc")
        ) + f" ({report.tta['delta_method']})")  # fmt: skip
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
