"""``raylung data check``: counts, leakage and readability of a split, in one report.

Leakage is any of: one group on two sides (by the split's own group column, and by the data's
group key — manifest ``group`` column or ``group_regex`` — when the data has one), one file on
two sides, or byte-identical files on two sides (content hashed; only files whose sizes
collide across splits are read). Near-duplicates that differ in bytes (LC25000's re-encoded
copies of one tile) are only caught through groups. Hashing and decoding, the slow parts on
large data, show a progress bar (:func:`raylung.progress.progress_bar`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from raylung.config import DataConfig
from raylung.data.images import UnreadableImageError, decode, describe, drop_alpha, to_channels, to_uint8
from raylung.data.samples import SplitSet
from raylung.errors import DataError
from raylung.progress import Bar, progress_bar

log = logging.getLogger(__name__)
SHOWN = 10


@dataclass
class CheckReport:
    """Everything ``check_splits`` found; ``has_leakage`` decides the CLI's exit status."""

    counts: dict[str, dict[str, int]]
    group_source: str
    shared_groups: dict[str, list[str]] = field(default_factory=dict)  # group -> splits
    shared_data_groups: dict[str, list[str]] | None = None  # None: the data has no group key
    shared_paths: dict[str, list[str]] = field(default_factory=dict)
    identical_files: list[list[tuple[str, str]]] = field(default_factory=list)  # [(split, path)]
    duplicates_within: int = 0
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)  # split, path, reason
    histogram: dict[str, Counter[str]] = field(default_factory=dict)
    channel_mean: tuple[float, ...] | None = None
    channel_std: tuple[float, ...] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def has_leakage(self) -> bool:
        found = (self.shared_groups, self.shared_data_groups, self.shared_paths, self.identical_files)
        return any(bool(f) for f in found)

    def __rich__(self) -> Group:
        return Group(*_render(self))

    def __str__(self) -> str:
        console = Console(file=io.StringIO(), width=110, color_system=None)
        console.print(self)
        return console.file.getvalue()  # type: ignore[attr-defined]


def check_splits(
    split_set: SplitSet,
    cfg: DataConfig | None = None,
    decode_images: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Check ``split_set`` for leakage and unreadable files; ``cfg`` supplies the data's groups.

    ``progress`` shows files hashed and images decoded, of how many, on stderr.
    """
    report = CheckReport(counts=split_set.counts(), group_source="split file")
    samples = split_set.all_samples()
    report.shared_groups = _shared_keys([(s.group, s.split) for s in samples])
    report.shared_paths = _shared_keys([(s.path, s.split) for s in samples])
    data_groups = _data_groups(cfg, report) if cfg is not None else None
    if data_groups is not None:
        unknown = sum(s.path not in data_groups for s in samples)
        if unknown:
            report.notes.append(f"{unknown} files are not in the data's group key; their own group is used")
        keyed = [(data_groups.get(s.path, s.group), s.split) for s in samples]
        report.shared_data_groups = _shared_keys(keyed)
    workers = workers or min(8, os.cpu_count() or 1)
    with progress_bar(progress) as bar:
        report.identical_files, report.duplicates_within = _identical(split_set, workers, bar)
        if decode_images:
            _decode_all(split_set, cfg, report, workers, bar)
    return report


def _shared_keys(pairs: list[tuple[str, str | None]]) -> dict[str, list[str]]:
    """Keys seen in more than one split -> those splits."""
    sides: dict[str, set[str]] = defaultdict(set)
    for key, split in pairs:
        sides[key].add(str(split))
    return {key: sorted(v) for key, v in sides.items() if len(v) > 1}


def _data_groups(cfg: DataConfig, report: CheckReport) -> dict[str, str] | None:
    """path -> group from the data itself (manifest column or regex), when it has a group key."""
    from raylung.data.layouts import discover_all

    try:
        found = discover_all(cfg.model_copy(update={"on_bad_image": "skip"}))
    except DataError as exc:
        report.notes.append(f"the data's own group key is unavailable ({exc}); the split's groups are used")
        return None
    report.group_source = found.group_source
    if found.group_source == "file":
        report.notes.append(
            "the data has no group key (no manifest group column, no group_regex): leakage between "
            "copies of one tile, slide or patient cannot be detected"
        )
        return None
    return {s.path: s.group for s in found.samples}


def _hash(path: str) -> str | None:
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _identical(split_set: SplitSet, workers: int, bar: Bar) -> tuple[list[list[tuple[str, str]]], int]:
    """Byte-identical files across splits (and a count of duplicates within one split)."""
    by_size: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for s in split_set.all_samples():
        try:
            by_size[os.path.getsize(s.path)].append((s.split, s.path))
        except OSError:
            continue
    candidates = [item for items in by_size.values() if len(items) > 1 for item in items]
    digests = []
    if candidates:
        task = bar.add_task("hashing files", total=len(candidates))
        with ThreadPoolExecutor(workers) as pool:
            for digest in pool.map(_hash, [p for _, p in candidates]):
                digests.append(digest)
                bar.advance(task)
    by_digest: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item, digest in zip(candidates, digests, strict=True):
        if digest is not None:
            by_digest[digest].append(item)
    across, within = [], 0
    for items in by_digest.values():
        if len(items) < 2:
            continue
        if len({split for split, _ in items}) > 1:
            across.append(sorted(items))
        else:
            within += len(items) - 1
    return across, within


def _decode_one(path: str, in_chans: int) -> tuple[str, np.ndarray | None, np.ndarray | None, str | None]:
    """(size/mode key, per-channel sum, per-channel sum of squares, error) of one file."""
    try:
        image = decode(path)
        key = f"{image.shape[1]}x{image.shape[0]} {describe(image)}"
        pixels = np.ascontiguousarray(to_channels(to_uint8(drop_alpha(image)), in_chans))
    except UnreadableImageError as exc:
        return "unreadable", None, None, exc.reason
    except ValueError as exc:
        return "unreadable", None, None, str(exc)
    mean, std = (v.ravel()[:in_chans] / 255.0 for v in cv2.meanStdDev(pixels))
    return key, mean, std**2 + mean**2, None


def _decode_all(
    split_set: SplitSet, cfg: DataConfig | None, report: CheckReport, workers: int, bar: Bar
) -> None:
    in_chans = cfg.in_chans if cfg is not None else 3
    train_sums, train_squares = [], []
    task = bar.add_task("decoding images", total=sum(len(samples) for samples in split_set.values()))
    for name, samples in split_set.items():
        results = []
        with ThreadPoolExecutor(workers) as pool:
            for result in pool.map(lambda s: _decode_one(s.path, in_chans), samples):
                results.append(result)
                bar.advance(task)
        histogram: Counter[str] = Counter()
        for sample, (key, mean, square, error) in zip(samples, results, strict=True):
            histogram[key] += 1
            if error is not None:
                report.unreadable.append((name, sample.path, error))
            elif name == "train":
                train_sums.append(mean)
                train_squares.append(square)
        report.histogram[name] = histogram
    if train_sums:  # mean of per-image means: every image weighs the same whatever its size
        mean = np.mean(train_sums, axis=0)
        std = np.sqrt(np.maximum(np.mean(train_squares, axis=0) - mean**2, 0))
        report.channel_mean = tuple(round(float(v), 4) for v in mean)
        report.channel_std = tuple(round(float(v), 4) for v in std)


def counts_table(counts: dict[str, dict[str, int]], title: str = "Samples per split") -> Table:
    """Rich table of :meth:`SplitSet.counts`: totals, labels and subclasses per split."""
    table = Table(title=title)
    labels = {"subclass:cancer", "subclass:non_cancer"}  # self-mapped folders repeat the label
    subclasses = sorted({k for row in counts.values() for k in row if k.startswith("subclass:")} - labels)
    columns = ["split", "total", "cancer", "non_cancer", *[k.split(":", 1)[1] for k in subclasses]]
    for column in columns:
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, row in counts.items():
        table.add_row(name, *[str(row.get(k, 0)) for k in ["total", "cancer", "non_cancer", *subclasses]])
    return table


def _render(report: CheckReport) -> list:
    parts: list = []
    counts = counts_table(report.counts)
    parts.append(counts)

    sizes = Table(title="Image size / storage")
    splits = list(report.histogram)
    sizes.add_column("size mode")
    for name in splits:
        sizes.add_column(name, justify="right")
    for key in sorted({k for h in report.histogram.values() for k in h}):
        sizes.add_row(key, *[str(report.histogram[s].get(key, 0)) for s in splits])
    if splits:
        parts.append(sizes)

    leak = Table(title="Leakage between splits", show_header=True)
    leak.add_column("check")
    leak.add_column("found", justify="right")
    leak.add_column("examples")
    rows = [
        ("groups shared (split file)", report.shared_groups),
        (f"groups shared (data: {report.group_source})", report.shared_data_groups),
        ("same file in two splits", report.shared_paths),
    ]
    for title, found in rows:
        if found is None:
            leak.add_row(title, Text("n/a", style="yellow"), "the data has no group key")
            continue
        examples = "; ".join(f"{k} in {'+'.join(v)}" for k, v in list(found.items())[:3])
        leak.add_row(title, _flag(len(found)), examples)
    identical = "; ".join(
        " = ".join(f"{s}:{Path(p).name}" for s, p in items) for items in report.identical_files[:3]
    )
    leak.add_row("byte-identical files across splits", _flag(len(report.identical_files)), identical)
    parts.append(leak)

    if report.duplicates_within:
        within = report.duplicates_within
        parts.append(Text(f"{within} byte-identical duplicate(s) within a split (not leakage)"))
    if report.unreadable:
        parts.append(Text(f"{len(report.unreadable)} unreadable file(s):", style="bold red"))
        parts += [Text(f"  {s}: {p} ({r})", style="red") for s, p, r in report.unreadable[:SHOWN]]
    if report.channel_mean is not None:
        parts.append(Text(f"train channel mean {report.channel_mean} std {report.channel_std} (0..1 scale)"))
    parts += [Text(f"note: {n}", style="yellow") for n in report.notes]
    verdict = "LEAKAGE between splits" if report.has_leakage else "no leakage found"
    parts.append(Text(verdict, style="bold red" if report.has_leakage else "bold green"))
    return parts


def _flag(count: int) -> Text:
    return Text(str(count), style="bold red" if count else "green")
