"""``raylung data tile``'s work: slides in, a manifest-layout folder out, resumable.

Layout written under ROOT::

    ROOT/tiles/<slide>/<x>_<y>.png   one tile; x, y its level-0 top-left corner
    ROOT/tiles/<slide>/tiles.csv     that slide's rows
    ROOT/tiles/<slide>/.done         marker: the slide is finished (and with which TileSpec)
    ROOT/tiles.csv                   every tile of every finished slide, labelled or not
    ROOT/manifest.csv                the labelled tiles, columns path,label,group[,split] then
                                     slide,x,y,tissue (extra columns; the manifest reader ignores them)

`group` is the patient when the labels CSV names one, else the slide, so raylung's grouped
split keeps a slide's (and a patient's) tiles in one split. The marker is written last, so a
run stopped mid-slide redoes that slide; a rerun skips finished slides unless the TileSpec
changed. A slide that cannot be read is reported by name and the others go on. The two top
CSVs are rebuilt from every finished slide folder, so slides tiled in separate runs add up.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from rich.progress import Progress

from raylung.data.naming import LABEL_NAMES
from raylung.errors import DataError
from raylung.progress import progress_bar
from raylung.slides.labels import Annotations, SlideLabel
from raylung.slides.reader import SlideError, open_slide, slide_name
from raylung.slides.tiler import TileSpec, plan_tiles, read_tile

log = logging.getLogger(__name__)

TILE_COLUMNS = ("path", "label", "group", "split", "slide", "x", "y", "tissue")
DONE = ".done"


@dataclass
class SlideTiles:
    """One slide's outcome: tiles kept (and labelled), of how many grid positions, or why it failed."""

    slide: str
    kept: int = 0
    labelled: int = 0
    grid: int = 0
    resolution: str = ""
    status: str = "tiled"  # tiled | skipped (finished earlier) | failed
    reason: str = ""


@dataclass
class TilingSummary:
    root: Path
    slides: list[SlideTiles] = field(default_factory=list)
    manifest: Path | None = None  # None when no tile is labelled
    n_labelled: int = 0

    @property
    def failed(self) -> list[SlideTiles]:
        return [s for s in self.slides if s.status == "failed"]


def _tile_one(
    path: Path, folder: Path, spec: TileSpec, label: SlideLabel | None, regions: Annotations | None,
    bar: Progress,
) -> SlideTiles:  # fmt: skip
    name = slide_name(path)
    with open_slide(path) as slide:
        plan = plan_tiles(slide, spec)
        boxes = plan.kept_boxes
        tissue = plan.tissue[plan.keep]
        if regions is not None:
            centres = boxes[:, :2] + boxes[:, 2:] / 2.0
            tile_labels = [int(v) if v >= 0 else None for v in regions.labels_at(centres)]
        else:
            tile_labels = [label.label if label else None] * len(boxes)
        group = (label.patient if label and label.patient else None) or name
        split = label.split if label and label.split else ""
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished or differently-specified earlier attempt
        folder.mkdir(parents=True)
        rows = []
        task = bar.add_task(name, total=len(boxes))
        for box, value, fraction in zip(boxes, tile_labels, tissue, strict=True):
            tile = read_tile(slide, plan, box, spec.size)
            file = folder / f"{box[0]}_{box[1]}.{spec.image_format}"
            if not cv2.imwrite(str(file), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR)):
                raise DataError(f"cannot write {file}")
            relative = file.relative_to(folder.parent.parent).as_posix()
            label_name = LABEL_NAMES[value] if value is not None else ""
            rows.append(
                [relative, label_name, group, split, name, int(box[0]), int(box[1]), f"{fraction:.3f}"]
            )
            bar.advance(task)
        bar.remove_task(task)
    with open(folder / "tiles.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([TILE_COLUMNS, *rows])
    result = SlideTiles(name, len(rows), sum(r[1] != "" for r in rows), len(plan.boxes), plan.resolution)
    marker = {"spec": spec.model_dump(mode="json"), "result": result.__dict__}
    (folder / DONE).write_text(json.dumps(marker))
    return result


def _finished(folder: Path, spec: TileSpec) -> SlideTiles | None:
    marker = folder / DONE
    if not marker.is_file():
        return None
    try:
        recorded = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None
    if recorded.get("spec") != spec.model_dump(mode="json"):
        log.info("re-tiling %s: tiled earlier with other settings", folder.name)
        return None
    return SlideTiles(**{**recorded["result"], "status": "skipped"})


def tile_slides(
    slides: Sequence[str | Path],
    root: str | Path,
    spec: TileSpec | None = None,
    *,
    labels: dict[str, SlideLabel] | None = None,
    annotations: dict[str, Annotations] | None = None,
    progress: bool = True,
) -> TilingSummary:
    """Tile `slides` into `root` (layout above); labels by slide (CSV) or by region (GeoJSON).

    With `annotations`, only tiles whose centre is in a labelled polygon are labelled (slides
    without annotations stay unlabelled); with `labels`, every tile takes its slide's label.
    Unlabelled tiles are saved and listed in ``tiles.csv`` but not in ``manifest.csv``.
    """
    spec = spec or TileSpec()
    root = Path(root).expanduser()
    names = [slide_name(p) for p in slides]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"slide names must be unique (file name without extension): {', '.join(twice)}")
    summary = TilingSummary(root)
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    with progress_bar(progress) as bar:
        overall = bar.add_task("tiling slides", total=len(slides))
        for path, name in zip(slides, names, strict=True):
            folder = root / "tiles" / name
            done = _finished(folder, spec)
            if done is None:
                label = (labels or {}).get(name)
                regions = (annotations or {}).get(name)
                try:
                    done = _tile_one(Path(path), folder, spec, label, regions, bar)
                    if labels is not None and label is None:
                        done.reason = "not in the labels file: tiles unlabelled"
                except SlideError as exc:
                    done = SlideTiles(name, status="failed", reason=str(exc))
                    log.error("%s", exc)
            summary.slides.append(done)
            bar.advance(overall)
    _write_tables(root, summary)
    return summary


def _write_tables(root: Path, summary: TilingSummary) -> None:
    """ROOT/tiles.csv and ROOT/manifest.csv from every finished slide folder under ROOT/tiles."""
    rows: list[dict[str, str]] = []
    for marker in sorted((root / "tiles").glob(f"*/{DONE}")):
        with open(marker.parent / "tiles.csv", newline="") as handle:
            rows.extend(csv.DictReader(handle))
    with_split = any(r["split"] for r in rows)
    columns = [c for c in TILE_COLUMNS if c != "split" or with_split]
    for name, chosen in (("tiles.csv", rows), ("manifest.csv", [r for r in rows if r["label"]])):
        target = root / name
        if name == "manifest.csv" and not chosen:
            target.unlink(missing_ok=True)
            continue
        with open(target, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(chosen)
        if name == "manifest.csv":
            summary.manifest, summary.n_labelled = target, len(chosen)
