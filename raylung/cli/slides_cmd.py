"""``raylung data tile SLIDES... --out ROOT``: whole slides to a manifest-layout tile folder.

Registered on the ``data`` group by :mod:`raylung.cli.data_cmd`. Options are validated once as
a :class:`~raylung.slides.TileSpec`; the work is :func:`raylung.slides.tile_slides`. Exit status:
0 all slides tiled, 1 some slide could not be read (the others are tiled and listed), 2 a user
error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from raylung.errors import ConfigError, DataError

if TYPE_CHECKING:
    from raylung.slides import TileSpec


def parse_tile_size(text: str) -> tuple[int, int]:
    """'320x240' -> (320, 240)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ConfigError(f"--size {text!r} must look like WIDTHxHEIGHT, e.g. 320x240")
    return int(width), int(height)


def find_slides(inputs: list[Path]) -> list[Path]:
    """Slide files given by name, plus slide files (by extension) directly inside given folders."""
    from raylung.slides import SLIDE_EXTENSIONS

    found: dict[Path, None] = {}
    for item in inputs:
        if item.is_dir():
            for file in sorted(item.iterdir()):
                if (
                    file.suffix.lower() in SLIDE_EXTENSIONS
                    and file.is_file()
                    and not file.name.startswith(".")
                ):
                    found[file] = None
        elif item.is_file():
            found[item] = None
        else:
            raise DataError(f"no such slide or folder: {item}")
    if not found:
        raise DataError(f"no slides ({', '.join(sorted(SLIDE_EXTENSIONS))}) in {', '.join(map(str, inputs))}")
    return list(found)


def tile_spec(**values: object) -> TileSpec:
    """The options as a validated TileSpec (one ConfigError listing every problem)."""
    from raylung.slides import TileSpec

    try:
        return TileSpec.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'tiling'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid tiling options: {problems}") from None


def tile_command(
    slides: list[Path] = typer.Argument(..., metavar="SLIDE_OR_FOLDER", help="Slide files and/or folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write tiles/ and manifest.csv to."),
    labels: Path | None = typer.Option(None, "--labels", help="CSV slide,label[,patient][,split]."),
    annotations: Path | None = typer.Option(
        None, "--annotations", help="GeoJSON file, or folder of <slide>.geojson (QuPath export)."
    ),
    mpp: float | None = typer.Option(None, "--mpp", help="Microns per pixel (default 0.5 when stated)."),
    level: int | None = typer.Option(None, "--level", help="Pyramid level instead of --mpp."),
    downsample: float | None = typer.Option(None, "--downsample", help="Downsample from level 0."),
    size: str = typer.Option("320x240", "--size", help="Tile size WIDTHxHEIGHT (the paper's: 320x240)."),
    min_tissue: float = typer.Option(0.5, "--min-tissue", help="Keep tiles with this tissue fraction."),
    image_format: str = typer.Option("png", "--format", help="png | jpg."),
) -> None:
    """Tile whole slides (OpenSlide, else tifffile) into raylung's manifest layout; resumable."""
    from raylung.slides import load_annotations, openslide_available, read_label_csv, tile_slides
    from raylung.slides.reader import slide_name

    if labels is not None and annotations is not None:
        raise ConfigError("give --labels or --annotations, not both")
    spec = tile_spec(size=parse_tile_size(size), mpp=mpp, level=level, downsample=downsample,
                     min_tissue=min_tissue, image_format=image_format)  # fmt: skip
    paths = find_slides(slides)
    slide_labels = read_label_csv(labels) if labels is not None else None
    regions = (
        load_annotations(annotations, [slide_name(p) for p in paths]) if annotations is not None else None
    )
    console = Console(soft_wrap=True)
    backend = "OpenSlide" if openslide_available() else "tifffile (OpenSlide not installed)"
    console.print(f"{len(paths)} slide(s), read with {backend}", highlight=False)
    summary = tile_slides(paths, out, spec, labels=slide_labels, annotations=regions)
    table = Table("slide", "status", "tiles", "labelled", "grid", "resolution", "note")
    for s in summary.slides:
        table.add_row(s.slide, s.status, str(s.kept), str(s.labelled), str(s.grid), s.resolution, s.reason)
    console.print(table)
    if summary.manifest is not None:
        console.print(f"{summary.n_labelled} labelled tile(s) -> {summary.manifest}", highlight=False)
    else:
        console.print(f"no labelled tiles: tiles listed in {summary.root / 'tiles.csv'}", highlight=False)
    if summary.failed:
        Console(stderr=True).print(f"[bold red]{len(summary.failed)} slide(s) could not be read[/]")
        raise typer.Exit(code=1)


# Extensions that only whole slides use (.tif/.tiff need --slides: they may be plain images).
WSI_ONLY = frozenset({".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms"})


def predict_slides_command(
    export: Path,
    inputs: list[Path],
    out: Path,
    spec_values: dict[str, object],
    threshold: float | None,
    batch_size: int,
    device: str | None,
    rule: str,
    cutoff: float,
) -> None:
    """``raylung predict EXPORT SLIDE... --slides --out DIR``: print what predict_slides wrote."""
    from raylung.artifacts.slide_predict import predict_slides

    spec = tile_spec(**spec_values)
    summary = predict_slides(
        export, find_slides(inputs), out, spec=spec, threshold=threshold, batch_size=batch_size,  # type: ignore[arg-type]
        device=device, rule=rule, cutoff=cutoff,  # type: ignore[arg-type]
    )  # fmt: skip
    console = Console(soft_wrap=True)
    table = Table("slide", "tiles", "mean P(cancer)", "fraction cancer", "score", "call", "resolution")
    for row in summary.groups.rows if summary.groups else []:
        call = "cancer" if row.predicted else "non_cancer"
        table.add_row(row.group, str(row.n_tiles), f"{row.mean_probability:.3f}",
                      f"{row.fraction_cancer:.3f}", f"{row.score:.3f}", call,
                      summary.resolution.get(row.group, ""))  # fmt: skip
    console.print(table)
    if summary.groups:
        console.print(f"slide rule: {summary.groups.describe()} -> {summary.slides_csv}", highlight=False)
    console.print(f"tiles -> {summary.tiles_csv}; heatmaps -> {summary.out_dir}", highlight=False)
    if summary.failed:
        errors = Console(stderr=True, soft_wrap=True)
        errors.print(f"[bold red]{len(summary.failed)} slide(s) could not be read:[/]")
        for path, reason in summary.failed:
            errors.print(f"  {path}: {reason}", highlight=False, markup=False)
        raise typer.Exit(code=1)
