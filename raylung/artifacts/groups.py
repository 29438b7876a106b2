"""Group-level results: one call per patient, slide or original tile, from its tiles' probabilities.

A pathologist reports on a patient or a slide, not on a 224-pixel tile, and the tiles of one
group are correlated: tile-level accuracy overstates how often a *case* is called right. This
module turns tile probabilities into one score and one decision per group, by a stated rule:

``mean``      score = the mean tile probability; the group is cancer when score >= `threshold`.
``fraction``  score = the fraction of tiles with probability >= `threshold`; the group is cancer
              when score >= `cutoff` (default 0.5: at least half of its tiles).

A group's true label is **cancer when any of its tiles is labelled cancer**: one cancerous tile
makes a cancer patient, and a missed cancer is the costly error. In the paper's layout and in
LC25000 all tiles of a group share one label, so the rule only decides for data that is
mislabelled or grouped wrongly; such groups are logged as a warning.

Group metrics are :func:`raylung.artifacts.metrics.binary_metrics` with each group one sample,
its rule's score as the probability and the rule's decision threshold; AUROC ranks the groups
by score. Callers with a split's samples pass ``[s.group for s in samples]``; ``predict`` finds
groups from file paths with :func:`group_keys`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from raylung.artifacts.metrics import binary_metrics
from raylung.data.files import MAX_LISTED
from raylung.data.naming import LABEL_NAMES
from raylung.errors import ConfigError, DataError

log = logging.getLogger(__name__)

GroupRule = Literal["mean", "fraction"]
GROUP_RULES: tuple[str, ...] = get_args(GroupRule)
FOLDER_KEY = "folder"  # --group-by folder: the image's parent folder names its group
GROUP_COLUMNS = (
    "group",
    "n_tiles",
    "mean_probability",
    "fraction_cancer",
    "score",
    "predicted_label",
    "rule",
)


@dataclass(frozen=True)
class GroupResult:
    """One group: its tiles' summary, the rule's score and decision, and its label if known."""

    group: str
    n_tiles: int
    mean_probability: float
    fraction_cancer: float  # of tiles with probability >= the tile threshold
    score: float  # what the rule compares: mean_probability or fraction_cancer
    predicted: int  # 1 = cancer
    label: int | None = None  # 1 = cancer (any tile labelled cancer); None when unknown


@dataclass(frozen=True)
class GroupResults:
    """Every group's result under one rule, and group-level metrics when labels are known."""

    rows: list[GroupResult]
    rule: GroupRule
    threshold: float
    cutoff: float
    metrics: dict[str, float] = field(default_factory=dict)  # empty without labels

    @property
    def decision_threshold(self) -> float:
        """The score at or above which a group is cancer (what metrics and bootstraps need)."""
        return self.threshold if self.rule == "mean" else self.cutoff

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.score for r in self.rows], dtype=np.float64)

    @property
    def labels(self) -> np.ndarray | None:
        if any(r.label is None for r in self.rows):
            return None
        return np.array([r.label for r in self.rows], dtype=np.int64)

    @property
    def groups(self) -> list[str]:
        return [r.group for r in self.rows]

    def describe(self) -> str:
        """The rule in one line, for CSV cells, summaries and report footnotes."""
        if self.rule == "mean":
            return f"mean tile probability >= {self.threshold:g}"
        return f"fraction of tiles with probability >= {self.threshold:g} is >= {self.cutoff:g}"


def check_rule(rule: str, threshold: float, cutoff: float) -> None:
    """Raise ConfigError for an unknown rule or a threshold/cutoff outside 0..1 (before any work)."""
    if rule not in GROUP_RULES:
        raise ConfigError(f"group rule {rule!r} is not one of {', '.join(GROUP_RULES)}")
    for name, value in (("threshold", threshold), ("cutoff", cutoff)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"group {name} must be within 0..1, got {value}")


def _validate(
    groups: Sequence[str],
    probs: np.ndarray,
    labels: np.ndarray | None,
    threshold: float,
    rule: str,
    cutoff: float,
) -> None:
    check_rule(rule, threshold, cutoff)
    if probs.ndim != 1 or len(groups) != probs.size:
        raise ValueError(f"{len(groups)} group keys for probabilities of shape {probs.shape}")
    if labels is not None and labels.shape != probs.shape:
        raise ValueError(f"labels {labels.shape} and probabilities {probs.shape} differ in shape")
    if labels is not None and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (non_cancer) or 1 (cancer)")
    if not np.all((probs >= 0.0) & (probs <= 1.0)):
        raise ValueError("probabilities must lie within 0..1 (pass probabilities, not logits)")


def group_results(
    groups: Sequence[str],
    labels: Sequence[float] | np.ndarray | None,
    probs: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    rule: GroupRule = "mean",
    cutoff: float = 0.5,
) -> GroupResults:
    """Aggregate tile probabilities to groups (sorted by key) and score them when labelled.

    Args:
        groups: the group key of each tile (``Sample.group``, or :func:`group_keys` of paths).
        labels: each tile's true label (1 = cancer), or None when unknown (no metrics then).
        probs: each tile's P(cancer), calibrated as the caller wants it.
        threshold: tile-level operating point (``LoadedModel.threshold``); the ``mean`` rule
            compares the group's mean with it, the ``fraction`` rule counts tiles at or above it.
        rule: ``mean`` or ``fraction`` (see the module docstring).
        cutoff: the ``fraction`` rule's share of cancer tiles that makes a cancer group.
    """
    probs = np.asarray(probs, dtype=np.float64)
    label_array = None if labels is None else np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64)
    _validate(groups, probs, label_array, threshold, rule, cutoff)
    decide_at = threshold if rule == "mean" else cutoff
    keys, inverse = np.unique(np.asarray([str(g) for g in groups], dtype=object), return_inverse=True)
    rows, mixed = [], []
    for index, key in enumerate(keys):
        members = inverse == index
        tile_probs = probs[members]
        mean, fraction = float(tile_probs.mean()), float(np.mean(tile_probs >= threshold))
        score = mean if rule == "mean" else fraction
        label = None
        if label_array is not None:
            tile_labels = label_array[members]
            label = int(tile_labels.max())  # cancer if any tile is cancer
            if tile_labels.min() != label:
                mixed.append(str(key))
        rows.append(
            GroupResult(str(key), int(members.sum()), mean, fraction, score, int(score >= decide_at), label)
        )
    if mixed:
        log.warning(
            "%d group(s) hold both cancer and non_cancer tiles (%s); each is labelled cancer "
            "(any cancer tile), but check the labels and the grouping",
            len(mixed), _listed(mixed),
        )  # fmt: skip
    metrics: dict[str, float] = {}
    if label_array is not None and rows:
        metrics = binary_metrics([r.label for r in rows], [r.score for r in rows], decide_at)
    return GroupResults(rows, rule, threshold, cutoff, metrics)


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def group_keys(paths: Sequence[str | Path], by: str) -> list[str]:
    """The group of each image path: its parent folder's name, or a regex's match.

    `by` is the keyword ``folder``, or a regex read like ``data.group_regex``: the named group
    ``group``, else capture group 1, else the whole match. A regex holding ``/`` is searched in
    the whole path (``patient_(\\d+)/`` names a folder); any other in the file name only, so a
    pattern that misses the name is an error rather than a chance match elsewhere in the path.
    A path that yields no (or an empty) key is an error: guessing would merge or split groups.
    """
    if by == FOLDER_KEY:
        return [Path(p).parent.name for p in paths]
    try:
        regex = re.compile(by)
    except re.error as exc:
        raise ConfigError(f"--group-by {by!r} is neither 'folder' nor a valid regex: {exc}") from None
    keys: list[str] = []
    unmatched: list[str] = []
    for path in paths:
        path = Path(path)
        match = regex.search(path.as_posix() if "/" in by else path.name)
        key = None
        if match is not None:
            if "group" in regex.groupindex:
                key = match.group("group")
            else:
                key = match.group(1) if regex.groups else match.group(0)
        if not key:
            unmatched.append(str(path))
        keys.append(key or "")
    if unmatched:
        raise DataError(
            f"--group-by {by!r} yields no group for {len(unmatched)} file(s): {_listed(unmatched)}; "
            "fix the regex so every path yields a group"
        )
    return keys


def write_group_csv(path: str | Path, results: GroupResults) -> Path:
    """One row per group (:data:`GROUP_COLUMNS`, plus ``label`` when every group's is known)."""
    path = Path(path)
    with_labels = results.labels is not None
    rule = results.describe()
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(GROUP_COLUMNS + (("label",) if with_labels else ()))
        for r in results.rows:
            scores = (f"{r.mean_probability:.6f}", f"{r.fraction_cancer:.6f}", f"{r.score:.6f}")
            row = [r.group, r.n_tiles, *scores, LABEL_NAMES[r.predicted], rule]
            writer.writerow(row + [LABEL_NAMES[r.label]] if with_labels and r.label is not None else row)
    return path
