"""`raylung predict EXPORT IMAGE_OR_FOLDER... --out predictions.csv`: label new images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console


def predict(
    export: Annotated[
        Path, typer.Argument(metavar="EXPORT_DIR", help="Export folder (or training checkpoint folder).")
    ],
    inputs: Annotated[
        list[Path], typer.Argument(metavar="IMAGE_OR_FOLDER", help="Image files and/or folders.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="CSV to write (slides: a folder, default slide_predictions).")
    ] = Path("predictions.csv"),
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            min=0.0,
            max=1.0,
            help="Cancer when probability >= this (default: the threshold stored with the export).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 32,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Search folders recursively.")
    ] = True,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: auto; onnx: cpu).")
    ] = None,
    runtime: Annotated[
        Literal["torch", "onnx"],
        typer.Option("--runtime", help="torch: the eager model; onnx: the export's model.onnx."),
    ] = "torch",
    tta: Annotated[
        bool,
        typer.Option(
            "--tta/--no-tta",
            help="Average probabilities over flips and turns (90/270 degrees on square inputs only).",
        ),
    ] = False,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            metavar="REGEX|folder",
            help="Also write <out>_groups.csv: one row per group, by parent folder ('folder') or a "
            "regex's capture group on the file name (on the whole path if the regex holds '/').",
        ),
    ] = None,
    group_rule: Annotated[
        Literal["mean", "fraction"],
        typer.Option(
            "--group-rule",
            help="mean: group is cancer when its mean probability >= threshold; fraction: when "
            "the fraction of its cancer tiles >= --group-cutoff.",
        ),
    ] = "mean",
    group_cutoff: Annotated[
        float, typer.Option("--group-cutoff", min=0.0, max=1.0, help="Cutoff of the fraction rule.")
    ] = 0.5,
    slides: Annotated[
        bool,
        typer.Option(
            "--slides",
            help="Inputs are whole slides (automatic for .svs/.ndpi/.mrxs/.scn/.bif/.vms): tile them "
            "like `data tile`, write tiles.csv, slides.csv (--group-rule) and heatmaps to the --out folder.",
        ),
    ] = False,
    mpp: Annotated[
        float | None, typer.Option("--mpp", help="Slides: microns per pixel (default 0.5).")
    ] = None,
    level: Annotated[int | None, typer.Option("--level", help="Slides: pyramid level.")] = None,
    downsample: Annotated[float | None, typer.Option("--downsample", help="Slides: downsample.")] = None,
    min_tissue: Annotated[float, typer.Option("--min-tissue", help="Slides: least tissue per tile.")] = 0.5,
) -> None:
    """Write path, probability, label, logit, runtime and TTA views for every readable image.

    With whole slides, score their tissue tiles and write one score per slide and a heatmap.
    """
    from raylung.api import predict as run_prediction
    from raylung.cli.slides_cmd import WSI_ONLY, predict_slides_command

    if slides or all(p.is_file() and p.suffix.lower() in WSI_ONLY for p in inputs):
        if tta or runtime != "torch" or group_by:
            from raylung.errors import ConfigError

            raise ConfigError(
                "whole-slide prediction runs torch without TTA or --group-by (slides are the groups)"
            )
        out = Path("slide_predictions") if out == Path("predictions.csv") else out
        spec = dict(mpp=mpp, level=level, downsample=downsample, min_tissue=min_tissue)
        predict_slides_command(
            export, inputs, out, spec, threshold, batch_size, device, group_rule, group_cutoff
        )
        return

    summary = run_prediction(
        export, inputs, out, threshold=threshold, batch_size=batch_size, recursive=recursive, device=device,
        runtime=runtime, tta=tta, group_by=group_by, group_rule=group_rule, group_cutoff=group_cutoff,
    )  # fmt: skip
    console, errors = Console(soft_wrap=True), Console(stderr=True)  # soft wrap: paths stay copyable
    if summary.synthetic_model:
        errors.print("[bold red]this model was trained on synthetic demo data[/]")
    how = f"{summary.threshold_source} threshold {summary.threshold:g}, temperature {summary.temperature:g}"
    how += f", runtime {summary.runtime}, TTA {summary.tta}"
    console.print(
        f"{summary.n_predicted} image(s): {summary.n_cancer} cancer, {summary.n_non_cancer} non_cancer "
        f"({how}) -> {summary.out_csv}",
        highlight=False,
        markup=False,
    )
    if summary.groups is not None:
        n_cancer = sum(r.predicted for r in summary.groups.rows)
        console.print(
            f"{len(summary.groups.rows)} group(s): {n_cancer} cancer, {len(summary.groups.rows) - n_cancer} "
            f"non_cancer ({summary.groups.describe()}) -> {summary.group_csv}",
            highlight=False,
            markup=False,
        )
    if summary.unreadable:
        errors.print(f"[yellow]{len(summary.unreadable)} unreadable file(s) got no prediction:[/]")
        for path, reason in summary.unreadable:
            errors.print(f"  {path}: {reason}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
