"""The one record every data stage passes around, and the splits file that fixes a split.

A splits file (CSV ``path,label,subclass,group,split``) is written once per experiment and read
verbatim by every trial and retrain, so they all see the same images on the same side.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from raylung.data import naming, storage
from raylung.errors import DataError

SPLITS_COLUMNS = ("path", "label", "subclass", "group", "split")


@dataclass(frozen=True, slots=True)
class Sample:
    """One image: where it is, its binary label and what it is grouped and reported by.

    Args:
        path: absolute path of the image file.
        label: 1 = cancer, 0 = non_cancer.
        subclass: finer class kept for per-subclass metrics (``good_cancer``, ``lung_aca``, ...).
        group: images sharing a group (same tile, slide or patient) never straddle splits.
        split: ``train``/``validation``/``test``, or None before splitting.
    """

    path: str
    label: int
    subclass: str | None
    group: str
    split: str | None = None

    @property
    def label_name(self) -> str:
        return naming.LABEL_NAMES[self.label]


class SplitSet(dict[str, list[Sample]]):
    """Split name -> samples, in the order train, validation, test."""

    @classmethod
    def from_samples(cls, samples: list[Sample]) -> SplitSet:
        missing = [s.path for s in samples if s.split is None]
        if missing:
            raise ValueError(f"{len(missing)} samples have no split, e.g. {missing[0]}")
        result = cls()
        for name in naming.SPLITS:
            chosen = [s for s in samples if s.split == name]
            if chosen:
                result[name] = chosen
        return result

    def all_samples(self) -> list[Sample]:
        return [s for samples in self.values() for s in samples]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split: total, per label name and per subclass (``subclass:<name>``)."""
        summary: dict[str, dict[str, int]] = {}
        for name, samples in self.items():
            row: Counter[str] = Counter()
            row["total"] = len(samples)
            for sample in samples:
                row[sample.label_name] += 1
                if sample.subclass is not None:
                    row[f"subclass:{sample.subclass}"] += 1
            row.setdefault("cancer", 0)
            row.setdefault("non_cancer", 0)
            summary[name] = dict(row)
        return summary

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(SPLITS_COLUMNS)
        for name, samples in self.items():
            for s in samples:
                writer.writerow([s.path, s.label_name, s.subclass or "", s.group, name])
        return buffer.getvalue()

    def save(self, location: str | Path) -> None:
        """Write the splits CSV to a local path or a URI (atomically where local)."""
        storage.write_text(location, self.to_csv())

    @classmethod
    def load(cls, location: str | Path, root: str | Path | None = None) -> SplitSet:
        """Read a splits CSV; relative paths resolve against ``root`` (default: the file's folder)."""
        text = storage.read_text(location)
        base = Path(root) if root is not None else _parent(location)
        reader = csv.DictReader(io.StringIO(text))
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        missing = [c for c in ("path", "label", "split") if c not in columns]
        if missing:
            raise DataError(
                f"splits file {location} lacks column(s) {', '.join(missing)}; "
                f"expected header {','.join(SPLITS_COLUMNS)}"
            )
        samples = []
        for line, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            samples.append(_row_to_sample(row, base, location, line))
        if not samples:
            raise DataError(f"splits file {location} has no rows")
        return cls.from_samples(samples)


def _parent(location: str | Path) -> Path:
    if storage.is_uri(location):
        return Path.cwd()
    return Path(location).resolve().parent


def _row_to_sample(row: dict[str, str], base: Path, location: str | Path, line: int) -> Sample:
    label = naming.binary_label(row["label"])
    split = naming.split_name(row["split"])
    if label is None:
        raise DataError(f"{location} line {line}: label {row['label']!r} is not cancer/non_cancer/1/0")
    if split is None:
        raise DataError(f"{location} line {line}: split {row['split']!r} is not train/validation/test")
    if not row["path"]:
        raise DataError(f"{location} line {line}: empty path")
    path = Path(row["path"])
    path = path if path.is_absolute() else base / path
    return Sample(
        path=str(path),
        label=label,
        subclass=row.get("subclass") or None,
        group=row.get("group") or str(path),
        split=split,
    )


GroupSource = Literal["manifest", "regex", "file"]


@dataclass
class Discovery:
    """What discovery found: the samples, how they are grouped, and what it left out."""

    layout: str
    root: Path
    samples: list[Sample]
    group_source: GroupSource = "file"
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_given_splits(self) -> bool:
        return bool(self.samples) and all(s.split is not None for s in self.samples)
