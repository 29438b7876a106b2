"""Slide labels from a CSV, and region labels from GeoJSON annotations (QuPath exports).

CSV: ``slide,label[,patient][,split]``; `slide` is the file name with or without extension,
`label` cancer/non_cancer/1/0 in any spelling, `patient` (optional) becomes the manifest group
so that a patient's slides stay in one split, `split` (optional) is kept verbatim.

GeoJSON: a FeatureCollection (or a list of features, or one feature) of Polygon/MultiPolygon
geometries in level-0 pixel coordinates, as QuPath's "Export objects as GeoJSON" writes them.
A feature's label is ``properties.classification.name``, else ``properties.name``, read as
cancer/non_cancer/1/0 (``tumor``/``tumour`` also mean cancer, QuPath's default class); other
features are ignored. A tile takes a label only when its centre lies inside a labelled polygon
(and outside its holes); when a centre lies inside both a cancer and a non-cancer polygon the
tile is cancer, as a group with any cancer tile is cancer in :mod:`raylung.artifacts.groups`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.path import Path as PolygonPath

from raylung.data.naming import binary_label, compact, split_name
from raylung.errors import DataError

_EXTRA_CANCER = {"tumor", "tumour"}


@dataclass(frozen=True)
class SlideLabel:
    """A slide's label (1 = cancer), its patient (None: the slide is its own group) and split."""

    label: int
    patient: str | None = None
    split: str | None = None


def _label(value: str) -> int | None:
    return 1 if compact(value) in _EXTRA_CANCER else binary_label(value)


def read_label_csv(path: str | Path) -> dict[str, SlideLabel]:
    """Slide name (no extension) -> :class:`SlideLabel`; DataError on a bad row, naming the line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"labels file {path} not found")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = {h.strip().lower(): h for h in reader.fieldnames or []}
        for needed in ("slide", "label"):
            if needed not in header:
                raise DataError(
                    f"labels file {path} has no {needed!r} column (slide,label[,patient][,split])"
                )
        labels: dict[str, SlideLabel] = {}
        for line, row in enumerate(reader, start=2):
            value = {key: (row.get(name) or "").strip() for key, name in header.items()}
            slide = value["slide"]
            label = _label(value["label"])
            if not slide or label is None:
                raise DataError(
                    f"labels file {path} line {line}: needs a slide and a cancer/non_cancer/1/0 label, "
                    f"got {value['slide']!r}, {value['label']!r}"
                )
            split = None
            if value.get("split"):
                split = split_name(value["split"])
                if split is None:
                    raise DataError(f"labels file {path} line {line}: split {value['split']!r} is not "
                                    "train/validation/test")  # fmt: skip
            key = _strip_extension(slide)
            if key in labels:
                raise DataError(f"labels file {path} line {line}: slide {slide!r} is listed twice")
            labels[key] = SlideLabel(label, value.get("patient") or None, split)
    return labels


def _strip_extension(name: str) -> str:
    from raylung.slides.reader import SLIDE_EXTENSIONS, slide_name

    return slide_name(name) if Path(name).suffix.lower() in SLIDE_EXTENSIONS else name


@dataclass(frozen=True)
class Annotations:
    """Labelled polygons of one slide, level-0 coordinates: (label, exterior, holes) each."""

    regions: list[tuple[int, PolygonPath, list[PolygonPath]]]

    def labels_at(self, points: np.ndarray) -> np.ndarray:
        """Per (x, y) point: 1 cancer, 0 non_cancer, -1 in no labelled polygon (cancer wins overlaps)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        result = np.full(len(points), -1, dtype=np.int64)
        for label, exterior, holes in sorted(self.regions, key=lambda r: r[0]):  # cancer last: wins
            inside = exterior.contains_points(points)
            for hole in holes:
                inside &= ~hole.contains_points(points)
            result[inside] = label
        return result


def _features(document: object, path: Path) -> list[dict]:
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        return list(document.get("features") or [])
    if isinstance(document, dict) and document.get("type") == "Feature":
        return [document]
    if isinstance(document, list):
        return [f for f in document if isinstance(f, dict)]
    raise DataError(f"annotations {path}: expected a GeoJSON FeatureCollection, Feature or list of features")


def _feature_label(properties: dict) -> int | None:
    classification = properties.get("classification")
    name = classification.get("name") if isinstance(classification, dict) else None
    return _label(str(name or properties.get("name") or ""))


def read_geojson(path: str | Path) -> Annotations:
    """The labelled polygons of one GeoJSON file; features without a readable label are skipped."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"annotations {path} are not readable JSON: {exc}") from exc
    regions = []
    for feature in _features(document, path):
        label = _feature_label(feature.get("properties") or {})
        geometry = feature.get("geometry") or {}
        if label is None:
            continue
        kind, coords = geometry.get("type"), geometry.get("coordinates") or []
        polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
        for rings in polygons:
            if rings:
                outer, *holes = (PolygonPath(np.asarray(ring, dtype=np.float64)[:, :2]) for ring in rings)
                regions.append((label, outer, holes))
    if not regions:
        raise DataError(f"annotations {path}: no Polygon/MultiPolygon feature with a cancer/non_cancer label")
    return Annotations(regions)


def load_annotations(source: str | Path, slide_names: list[str]) -> dict[str, Annotations]:
    """Annotations per slide from a folder (``<slide>.geojson`` or ``.json``) or one file.

    One file goes to the slide of the same name, or to the only slide when one is tiled.
    Slides without annotations are absent from the result (their tiles stay unlabelled).
    """
    source = Path(source).expanduser()
    if source.is_file():
        owner = slide_names[0] if len(slide_names) == 1 else Path(source).stem
        if owner not in slide_names:
            raise DataError(
                f"annotations {source}: name it after its slide (one of {', '.join(slide_names)})"
            )
        return {owner: read_geojson(source)}
    if not source.is_dir():
        raise DataError(f"annotations {source} not found")
    found = {}
    for name in slide_names:
        for suffix in (".geojson", ".json"):
            if (source / f"{name}{suffix}").is_file():
                found[name] = read_geojson(source / f"{name}{suffix}")
                break
    return found
