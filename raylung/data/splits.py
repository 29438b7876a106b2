"""Splits without leakage: given splits used verbatim, otherwise a grouped, stratified one.

A group (an original tile, a slide, a patient) never straddles splits, and each split gets each
label in proportion to the configured fractions as closely as whole groups allow. The split is
seeded and written to a splits file that every trial and retrain reads back verbatim.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from raylung.config import DataConfig, SplitConfig
from raylung.data import naming
from raylung.data.files import MAX_LISTED
from raylung.data.layouts import discover_all
from raylung.data.samples import Sample, SplitSet
from raylung.errors import DataError

log = logging.getLogger(__name__)


def discover(cfg: DataConfig) -> list[Sample]:
    """Every usable sample under ``cfg.root`` (layout detected when ``layout: auto``)."""
    return discover_all(cfg).samples


def grouped_split(samples: list[Sample], fractions: SplitConfig) -> SplitSet:
    """Assign whole groups to train/validation/test, stratified by (majority) label, seeded."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.group].append(sample)
    targets = np.array([fractions.train, fractions.validation, fractions.test])
    rng = np.random.default_rng(fractions.seed)
    assignment: dict[str, str] = {}
    for stratum in _strata(groups):
        assignment.update(_assign_stratum(stratum, groups, targets, rng))
    return SplitSet.from_samples([replace(s, split=assignment[s.group]) for s in samples])


def subsample_groups(samples: list[Sample], fraction: float, seed: int) -> list[Sample]:
    """A seeded fraction of `samples` by whole groups, per label, never leaving a label empty.

    Groups are taken in one seeded order per label until the label's share of images reaches
    `fraction`, so a smaller fraction's subset lies inside a larger one's (nested), and the
    label balance of the split is kept. Used for the training split only.
    """
    if fraction >= 1.0:
        return list(samples)
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.group].append(sample)
    rng = np.random.default_rng(seed)
    kept: set[str] = set()
    for label in (1, 0):
        keys = sorted(
            k for k, members in groups.items() if round(np.mean([s.label for s in members])) == label
        )
        if not keys:
            continue
        goal = fraction * sum(len(groups[k]) for k in keys)
        taken = 0
        for i in rng.permutation(len(keys)):
            if taken >= goal and taken:
                break
            kept.add(keys[i])
            taken += len(groups[keys[i]])
    return [s for s in samples if s.group in kept]


def training_samples(cfg: DataConfig, split_set: SplitSet) -> list[Sample]:
    """The images a run trains on: the training split, subsampled to `cfg.train_fraction`."""
    return subsample_groups(split_set["train"], cfg.train_fraction, cfg.split.seed)


def _strata(groups: dict[str, list[Sample]]) -> list[list[str]]:
    """Group keys per (label, subclass) by majority; a label whose subclasses cannot each fill
    three splits is stratified by label alone."""
    by_label: dict[int, dict[str | None, list[str]]] = {1: defaultdict(list), 0: defaultdict(list)}
    for key in sorted(groups):
        members = groups[key]
        label = int(2 * sum(s.label for s in members) >= len(members))
        subclass = Counter(s.subclass for s in members).most_common(1)[0][0]
        by_label[label][subclass].append(key)
    strata: list[list[str]] = []
    for label in (1, 0):
        keys = [k for sub in by_label[label].values() for k in sub]
        if len(keys) < len(naming.SPLITS):
            raise DataError(
                f"cannot split: {naming.LABEL_NAMES[label]} has {len(keys)} group(s) but each of "
                "train/validation/test needs at least one; add data or check the group key"
            )
        if all(len(sub) >= len(naming.SPLITS) for sub in by_label[label].values()):
            strata += [by_label[label][sub] for sub in sorted(by_label[label], key=str)]
        else:
            strata.append(sorted(keys))
    return strata


def _assign_stratum(
    keys: list[str], groups: dict[str, list[Sample]], targets: np.ndarray, rng: np.random.Generator
) -> dict[str, str]:
    """Greedy by deficit: largest groups first (random order among equals), each to the split
    furthest below its target; then no split is left without a group."""
    order = [keys[i] for i in rng.permutation(len(keys))]
    order.sort(key=lambda k: -len(groups[k]))  # stable: the shuffle breaks ties
    goal = targets * sum(len(groups[k]) for k in keys)
    counts = np.zeros(len(targets))
    members: list[list[str]] = [[] for _ in targets]
    for key in order:
        best = int(np.argmax(goal - counts))
        members[best].append(key)
        counts[best] += len(groups[key])
    for empty in [i for i, m in enumerate(members) if not m]:
        donor = max(range(len(members)), key=lambda i: len(members[i]))
        smallest = min(members[donor], key=lambda k: len(groups[k]))
        members[donor].remove(smallest)
        members[empty].append(smallest)
    return {key: naming.SPLITS[i] for i, keys_ in enumerate(members) for key in keys_}


def validate_splits(split_set: SplitSet, source: str) -> None:
    """Train and validation must exist; every split present must hold both labels."""
    for required in ("train", "validation"):
        if not split_set.get(required):
            raise DataError(f"{source} has no {required} samples; train and validation are required")
    for name, samples in split_set.items():
        labels = {s.label for s in samples}
        for label in (1, 0):
            if label not in labels:
                raise DataError(
                    f"{source}: the {name} split has no {naming.LABEL_NAMES[label]} images; "
                    "every split needs both classes"
                )
    if "test" not in split_set:
        log.warning("%s has no test split; test metrics will be unavailable", source)


def _require_files(split_set: SplitSet, source: str) -> None:
    missing = [s.path for s in split_set.all_samples() if not Path(s.path).is_file()]
    if missing:
        listed = ", ".join(missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise DataError(
            f"{len(missing)} file(s) in {source} no longer exist: {listed}{more}. Restore them, or "
            "remove data.splits_file to make a new split (results then are not comparable)"
        )


def resolve_splits(cfg: DataConfig, out: str | Path | None = None) -> SplitSet:
    """The split to train on: ``cfg.splits_file`` verbatim if set, else the data's own splits
    (paper layout, manifest split column), else a grouped split. Written to ``out`` if given."""
    if cfg.splits_file:
        source = f"splits file {cfg.splits_file}"
        split_set = SplitSet.load(cfg.splits_file, root=Path(cfg.root).expanduser())
        _require_files(split_set, source)
    else:
        found = discover_all(cfg)
        if found.has_given_splits:
            source = f"the {found.layout} layout's own splits"
            split_set = SplitSet.from_samples(found.samples)
        else:
            source = f"a grouped split of {found.root}"
            if found.group_source == "file":
                log.warning(
                    "no group key (manifest group column or data.group_regex): each file is its own "
                    "group, so copies of one tile, slide or patient may land in different splits"
                )
            split_set = grouped_split(found.samples, cfg.split)
    validate_splits(split_set, source)
    if out is not None:
        split_set.save(out)
        log.info("wrote splits file %s", out)
    return split_set
