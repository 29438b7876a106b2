"""`raylung report EXPERIMENT_DIR`: one self-contained HTML page of a search and its best model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def report(
    experiment: Annotated[
        Path, typer.Argument(metavar="EXPERIMENT_DIR", help="Experiment directory made by `raylung tune`.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="HTML file to write (default: EXPERIMENT_DIR/report.html)."),
    ] = None,
    n_boot: Annotated[
        int,
        typer.Option(
            "--n-boot",
            min=0,
            help="Bootstrap resamples for the 95% CIs when the report evaluates best/export itself "
            "(a retrain's test evaluation is shown as it was made).",
        ),
    ] = 1000,
    explain: Annotated[
        bool, typer.Option("--explain/--no-explain", help="Draw attention/Grad-CAM figures if none exist.")
    ] = True,
) -> None:
    """Write one self-contained HTML page: space, trials, curves, importance, test metrics, explanations."""
    from raylung.errors import ConfigError
    from raylung.report import build_report

    if not experiment.is_dir():
        raise ConfigError(f"{experiment} is not a directory: pass the directory `raylung tune` made")
    path = build_report(experiment, out, n_boot=n_boot, explain=explain)
    Console().print(f"report: {path}")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
