"""The manifest layout: a CSV listing ``path, label[, group][, split][, subclass]``.

Paths are relative to the manifest's folder, or absolute. Labels go through ``label_map`` or are
cancer/non_cancer/1/0 in any spelling. Column aliases accept the LC25000 dev manifest as is
(``binary_label`` -> label, ``group_id`` -> group).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

from raylung.config import DataConfig
from raylung.data import naming
from raylung.data.files import MAX_LISTED, report_bad, screen
from raylung.data.samples import Discovery, Sample
from raylung.errors import DataError

log = logging.getLogger(__name__)

# First column present wins, so `binary_label` beats `label_index` in the LC25000 manifest.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "path": ("path", "file", "filename", "file_name", "filepath", "image", "image_path"),
    "label": ("label", "binary_label", "class", "target", "label_index"),
    "group": ("group", "group_id"),
    "split": ("split",),
    "subclass": ("subclass", "subtype"),
}


def manifest_path(cfg: DataConfig) -> Path:
    """The manifest file: ``cfg.manifest`` (relative to the cwd, else to the root) or ROOT/manifest.csv."""
    root = Path(cfg.root).expanduser()
    if cfg.manifest is None:
        path = root / "manifest.csv"
    else:
        path = Path(cfg.manifest).expanduser()
        if not path.is_absolute() and not path.is_file() and (root / path).is_file():
            path = root / path
    if not path.is_file():
        raise DataError(f"manifest {path} not found; set data.manifest to the CSV's path")
    return path.resolve()


def _columns(header: list[str], path: Path) -> dict[str, str]:
    """Role -> actual header name, using the first alias present."""
    lowered = {h.strip().lower(): h for h in header}
    chosen = {}
    for role, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                chosen[role] = lowered[alias]
                break
    for role in ("path", "label"):
        if role not in chosen:
            raise DataError(
                f"manifest {path} has no {role} column (columns: {', '.join(header)}); "
                f"accepted names: {', '.join(COLUMN_ALIASES[role])}"
            )
    return chosen


def discover_manifest(cfg: DataConfig) -> Discovery:
    path = manifest_path(cfg)
    base = path.parent
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = _columns(reader.fieldnames or [], path)
        rows = list(enumerate(reader, start=2))
    if not rows:
        raise DataError(f"manifest {path} has a header but no rows")

    samples: list[Sample] = []
    missing: list[tuple[str, str]] = []
    unknown_labels: Counter[str] = Counter()
    seen: dict[str, int] = {}
    no_group = 0
    for line, row in rows:
        value = {role: (row.get(name) or "").strip() for role, name in columns.items()}
        if not value["path"]:
            raise DataError(f"manifest {path} line {line}: empty path")
        file = Path(value["path"]).expanduser()
        file = (file if file.is_absolute() else base / file).resolve()
        if str(file) in seen:
            raise DataError(
                f"manifest {path} lists {value['path']} twice (lines {seen[str(file)]} and {line}); "
                "each image must appear once"
            )
        seen[str(file)] = line
        label = naming.resolve_label(cfg.label_map, value["label"])
        if label is None:
            unknown_labels[value["label"]] += 1
            continue
        if not file.is_file():
            missing.append((str(file), f"listed on line {line} of {path.name} but not found"))
            continue
        split = None
        if value.get("split"):
            split = naming.split_name(value["split"])
            if split is None:
                raise DataError(
                    f"manifest {path} line {line}: split {value['split']!r} is not train/validation/test"
                )
        subclass = value.get("subclass") or None
        if subclass is None and naming.binary_label(value["label"]) is None:
            subclass = value["label"]  # e.g. lung_aca mapped through the label map
        group = value.get("group") or ""
        if not group:
            no_group += 1
            group = file.relative_to(base).as_posix() if file.is_relative_to(base) else str(file)
        samples.append(Sample(str(file), label, subclass, group, split))

    if unknown_labels:
        shown = ", ".join(f"{k!r} ({n} rows)" for k, n in unknown_labels.most_common(MAX_LISTED))
        example = next(iter(unknown_labels)) or "value"
        raise DataError(
            f"manifest {path}: label value(s) {shown} are not cancer/non_cancer/1/0; map them with "
            f"a label map, e.g. --label-map {example}=cancer or data.label_map: {{{example}: cancer}}"
        )
    with_split = sum(s.split is not None for s in samples)
    if 0 < with_split < len(samples):
        raise DataError(
            f"manifest {path}: {len(samples) - with_split} of {len(samples)} rows have an empty split; "
            "fill every split value or leave the column empty to let raylung split"
        )
    good, bad = screen([Path(s.path) for s in samples])
    report_bad(missing + bad, cfg.on_bad_image, f"manifest {path}")
    keep = {str(p) for p in good}
    samples = [s for s in samples if s.path in keep]
    if not samples:
        raise DataError(f"manifest {path} lists no usable images")

    has_groups = "group" in columns and no_group < len(rows)
    notes = []
    if has_groups and no_group:
        notes.append(f"{no_group} manifest rows have no group: each is its own group")
    return Discovery(
        "manifest",
        Path(cfg.root).expanduser().resolve(),
        samples,
        "manifest" if has_groups else "file",
        missing + bad,
        notes,
    )
