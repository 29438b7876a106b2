"""``raylung data split|check|preview|demo``: parse, build a DataConfig, call raylung.data, print.

``raylung data tile`` (whole slides) lives in :mod:`raylung.cli.slides_cmd` and is added here.

Options override the ``data:`` section of ``--config FILE.yaml``; the result is validated once
as a :class:`~raylung.config.DataConfig`. Exit status: 0 ok, 1 ``check`` found leakage (or
unreadable files with ``on_bad_image: error``), 2 a user error (printed as one line by main).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from raylung.config import DataConfig
from raylung.errors import ConfigError

console = Console()
data_app = typer.Typer(
    name="data",
    help="Inspect, split, check and preview datasets; write the synthetic demo set.",
    no_args_is_help=True,
)

CONFIG = typer.Option(None, "--config", "-c", help="raylung YAML file; its data: section is the base.")
ROOT = typer.Option(None, "--root", help="Dataset root folder.")
LAYOUT = typer.Option(None, "--layout", help="auto | paper | folders | manifest.")
LABEL_MAP = typer.Option(
    None,
    "--label-map",
    help="Folder/label value -> class, e.g. lung_aca=cancer,lung_scc=cancer,lung_n=non_cancer.",
)
GROUP_REGEX = typer.Option(
    None, "--group-regex", help="Regex on file names; group 1 or (?P<group>...) is the group."
)
MANIFEST = typer.Option(None, "--manifest", help="Manifest CSV (path,label[,group][,split][,subclass]).")
SPLITS_FILE = typer.Option(None, "--splits-file", help="Existing splits CSV (or URI) to use verbatim.")
ON_BAD = typer.Option(None, "--on-bad-image", help="error | skip.")


def parse_label_map(text: str) -> dict[str, str]:
    """'a=cancer,b=non-cancer' -> {'a': 'cancer', 'b': 'non_cancer'}."""
    from raylung.data.naming import LABEL_NAMES, binary_label

    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        label = binary_label(value) if sep else None
        if not name.strip() or label is None or value.strip().isdigit():
            raise ConfigError(f"--label-map entry {item!r} must look like NAME=cancer or NAME=non_cancer")
        mapping[name.strip()] = LABEL_NAMES[label]
    if not mapping:
        raise ConfigError("--label-map is empty")
    return mapping


def parse_size(text: str) -> tuple[int, int]:
    """'160x120' -> (160, 120)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ConfigError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 160x120")
    return int(width), int(height)


def _yaml_data_section(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("data", {}), dict):
        raise ConfigError(f"config file {path}: expected a mapping with a data: section")
    return dict(document.get("data") or {})


def build_config(config: Path | None = None, **overrides: Any) -> DataConfig:
    """The YAML ``data:`` section (if any) updated by the options that were given, validated."""
    values = _yaml_data_section(config) if config is not None else {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key.startswith("split_"):
            values.setdefault("split", {})[key.removeprefix("split_")] = value
        elif key.startswith("augment_"):
            values.setdefault("augment", {})[key.removeprefix("augment_")] = value
        else:
            values[key] = value
    try:
        return DataConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid data config: {problems}") from None


def _common(
    config: Path | None,
    root: Path | None,
    layout: str | None,
    label_map: str | None,
    group_regex: str | None,
    manifest: Path | None,
    splits_file: str | None,
    on_bad_image: str | None,
    **more: Any,
) -> DataConfig:
    """The options every data command shares, on top of the YAML file."""
    return build_config(
        config,
        root=root,
        layout=layout,
        label_map=parse_label_map(label_map) if label_map else None,
        group_regex=group_regex,
        manifest=manifest,
        splits_file=splits_file,
        on_bad_image=on_bad_image,
        **more,
    )


@data_app.command("split")
def split_command(
    out: Path = typer.Option(Path("splits.csv"), "--out", "-o", help="Where to write the splits CSV."),
    seed: int | None = typer.Option(None, "--seed", help="Split seed (data.split.seed)."),
    config: Path | None = CONFIG,
    root: Path | None = ROOT,
    layout: str | None = LAYOUT,
    label_map: str | None = LABEL_MAP,
    group_regex: str | None = GROUP_REGEX,
    manifest: Path | None = MANIFEST,
    on_bad_image: str | None = ON_BAD,
) -> None:
    """Make (or take the data's own) train/validation/test split and write the splits file."""
    from raylung.data import detect_layout, discover_all, resolve_splits
    from raylung.data.check import counts_table

    cfg = _common(config, root, layout, label_map, group_regex, manifest, None, on_bad_image, split_seed=seed)
    found = discover_all(cfg)
    why = detect_layout(cfg)[1]
    console.print(f"layout [bold]{found.layout}[/] ({why}); groups from {found.group_source}")
    if found.skipped:
        console.print(f"[yellow]skipped {len(found.skipped)} unreadable file(s)[/]")
    split_set = resolve_splits(cfg, out=out)
    console.print(counts_table(split_set.counts()))
    console.print(f"wrote {out}")


@data_app.command("check")
def check_command(
    no_decode: bool = typer.Option(False, "--no-decode", help="Skip decoding (no readability/size report)."),
    config: Path | None = CONFIG,
    root: Path | None = ROOT,
    layout: str | None = LAYOUT,
    label_map: str | None = LABEL_MAP,
    group_regex: str | None = GROUP_REGEX,
    manifest: Path | None = MANIFEST,
    splits_file: str | None = SPLITS_FILE,
    on_bad_image: str | None = ON_BAD,
) -> None:
    """Report counts, leakage (shared groups, files, identical bytes) and unreadable files.

    Exits 1 on leakage, or on unreadable files when on_bad_image is error. Files hashed and
    images decoded are counted on stderr (RAYLUNG_PROGRESS=auto|always|never).
    """
    from raylung.data import check_splits, is_synthetic, resolve_splits

    cfg = _common(config, root, layout, label_map, group_regex, manifest, splits_file, on_bad_image)
    split_set = resolve_splits(cfg)
    report = check_splits(split_set, cfg, decode_images=not no_decode, progress=True)
    if Path(cfg.root).is_dir() and is_synthetic(cfg.root):
        console.print("[bold red]synthetic demo data[/]")
    console.print(report)
    if report.has_leakage or (report.unreadable and cfg.on_bad_image == "error"):
        raise typer.Exit(code=1)


@data_app.command("preview")
def preview_command(
    out: Path = typer.Option(Path("augment_preview.png"), "--out", "-o", help="PNG to write."),
    split: str = typer.Option("train", "--split", help="Split to draw images from."),
    rows: int = typer.Option(4, "--rows", min=1, max=32),
    columns: int = typer.Option(6, "--columns", min=2, max=32),
    policy: str | None = typer.Option(None, "--policy", help="none | light | medium | heavy | custom."),
    strengths: str | None = typer.Option(None, "--strengths", help="Overrides, e.g. blur=0.5,hed_jitter=1."),
    seed: int = typer.Option(0, "--seed"),
    config: Path | None = CONFIG,
    root: Path | None = ROOT,
    layout: str | None = LAYOUT,
    label_map: str | None = LABEL_MAP,
    manifest: Path | None = MANIFEST,
    splits_file: str | None = SPLITS_FILE,
) -> None:
    """Write a PNG grid of augmented training images (first column: un-augmented)."""
    from raylung.data import is_synthetic, make_preview, resolve_splits
    from raylung.data.naming import split_name

    extra: dict[str, Any] = {"augment_policy": policy}
    for item in filter(None, (strengths or "").split(",")):
        name, _, value = item.partition("=")
        try:
            extra[f"augment_{name.strip()}"] = float(value)
        except ValueError:
            raise ConfigError(f"--strengths entry {item!r} must look like NAME=0.5") from None
    cfg = _common(config, root, layout, label_map, None, manifest, splits_file, "skip", **extra)
    split_set = resolve_splits(cfg)
    wanted = split_name(split) or split
    if wanted not in split_set:
        raise ConfigError(f"--split {split!r}: the split has only {', '.join(split_set)}")
    synthetic = Path(cfg.root).is_dir() and is_synthetic(cfg.root)
    path = make_preview(
        split_set[wanted], cfg, out, rows=rows, columns=columns, seed=seed, synthetic=synthetic
    )
    console.print(f"wrote {path}")


@data_app.command("demo")
def demo_command(
    out: Path = typer.Argument(..., help="Folder to write the synthetic demo dataset to."),
    per_subclass: int = typer.Option(
        40, "--per-subclass", help="Training images per subclass (validation and test: half)."
    ),
    size: str = typer.Option("160x120", "--size", help="Image size WIDTHxHEIGHT."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write the small, deterministic SYNTHETIC demo dataset in the paper's layout."""
    from raylung.data import make_demo_dataset

    root = make_demo_dataset(out, per_subclass=per_subclass, size=parse_size(size), seed=seed)
    console.print(f"wrote [bold red]synthetic demo data[/] to {root} (marked by SYNTHETIC_DEMO_DATA.txt)")


def register(app: typer.Typer) -> None:
    from raylung.cli.slides_cmd import tile_command  # whole slides: their own module

    data_app.command("tile")(tile_command)
    app.add_typer(data_app, name="data")
