"""Discovery of the three dataset layouts raylung reads, and of their group keys.

* ``paper``: ``ROOT/{train,validation,test}/{good_cancer,bad_cancer,good_non_cancer,
  bad_non_cancer}/*`` (Kim & Kang 2023, Table 1), any spelling; the split is given.
* ``folders``: ``ROOT/<class>/*`` with ``label_map`` (e.g. LC25000's lung_aca, lung_scc, lung_n);
  folders named cancer/non_cancer map themselves. raylung makes the split.
* ``manifest``: a CSV of ``path, label[, group][, split][, subclass]`` (see :mod:`.manifest`).

``layout: auto`` picks manifest (``manifest`` set or ``ROOT/manifest.csv``), then paper (split
folders), then folders, and says which it picked and why.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

from raylung.config import DataConfig
from raylung.data import naming
from raylung.data.files import MAX_LISTED, child_dirs, list_images, report_bad, screen
from raylung.data.samples import Discovery, Sample
from raylung.errors import DataError

log = logging.getLogger(__name__)


def detect_layout(cfg: DataConfig) -> tuple[str, str]:
    """(layout, why) for ``cfg``; an explicit ``cfg.layout`` wins."""
    if cfg.layout != "auto":
        return cfg.layout, "set in the config"
    if cfg.manifest is not None:
        return "manifest", f"manifest {cfg.manifest} is set"
    root = _existing_root(cfg)
    if (root / "manifest.csv").is_file():
        return "manifest", f"{root / 'manifest.csv'} exists"
    splits = [d.name for d in child_dirs(root) if naming.split_name(d.name)]
    if splits:
        return "paper", f"split folders {', '.join(splits)} under {root}"
    return "folders", f"no manifest.csv and no split folders under {root}"


def discover_all(cfg: DataConfig) -> Discovery:
    """Find every sample under ``cfg.root`` in the configured (or detected) layout; with
    ``demo: true`` the synthetic demo set is written there first if the root is missing."""
    if cfg.demo:
        from raylung.data.demo import ensure_demo_data

        ensure_demo_data(cfg)
    layout, why = detect_layout(cfg)
    log.info("data layout: %s (%s)", layout, why)
    if layout == "manifest":
        from raylung.data.manifest import discover_manifest

        found = discover_manifest(cfg)
    elif layout == "paper":
        found = _discover_paper(cfg)
    else:
        found = _discover_folders(cfg)
    found.notes.insert(0, f"layout {layout}: {why}")
    if cfg.group_regex is not None:
        found.samples = apply_group_regex(found.samples, cfg.group_regex)
        found.group_source = "regex"
    return found


def _existing_root(cfg: DataConfig) -> Path:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        hint = " (or set data.demo: true to write the synthetic demo data there)" if not cfg.demo else ""
        raise DataError(f"data root {root} does not exist or is not a folder{hint}")
    return root.resolve()


def _label_folder(cfg: DataConfig, name: str) -> tuple[int, str] | None:
    """(label, subclass) of a class folder: label map, then Table 1 names, then cancer/non_cancer."""
    mapped = naming.lookup_label_map(cfg.label_map, name)
    if mapped is not None:
        return mapped, name
    paper = naming.paper_subclass(name)
    if paper is not None:
        return paper[1], paper[0]
    binary = naming.binary_label(name)
    if binary is not None and not name.strip().isdigit():
        return binary, naming.LABEL_NAMES[binary]
    return None


def _unknown_folders_error(where: Path, unknown: list[str], found: list[str]) -> DataError:
    example = ",".join(f"{name}=cancer" for name in unknown[:2])
    hint = ""
    if any(naming.split_name(n) for n in unknown):
        hint = " Some look like split folders: use layout: paper (ROOT/train/<class>/...)."
    return DataError(
        f"unknown class folder(s) {', '.join(unknown)} in {where} (folders found: {', '.join(found)}). "
        f"Map each folder to cancer or non_cancer with a label map, e.g. --label-map {example} "
        f"or in YAML data.label_map: {{{unknown[0]}: cancer}}.{hint}"
    )


def _class_samples(
    cfg: DataConfig, root: Path, folder: Path, split: str | None, where: str
) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Samples of every class folder in ``folder``; DataError on unknown or empty classes."""
    classes = child_dirs(folder)
    labelled = {d: _label_folder(cfg, d.name) for d in classes}
    unknown = [d.name for d, v in labelled.items() if v is None]
    if unknown:
        raise _unknown_folders_error(folder, unknown, [d.name for d in classes])
    if not classes:
        raise DataError(f"no class folders in {folder}; expected {where}")
    loose = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if any(p.suffix.lower() in {".jpg", ".jpeg", ".png", ".tif", ".tiff"} for p in loose):
        log.warning("ignoring image files directly in %s: they are in no class folder", folder)
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for class_dir, (label, subclass) in labelled.items():  # type: ignore[misc]
        paths = list_images(class_dir)
        if not paths:
            raise DataError(
                f"class folder {class_dir} holds no images (JPEG, PNG or TIFF); "
                "add images or remove the folder"
            )
        good, bad = screen(paths)
        skipped += bad
        samples += [Sample(str(p), label, subclass, p.relative_to(root).as_posix(), split) for p in good]
    return samples, skipped


def _discover_paper(cfg: DataConfig) -> Discovery:
    root = _existing_root(cfg)
    expected = f"{root}/{{train,validation,test}}/{{good_cancer,bad_cancer,good_non_cancer,bad_non_cancer}}/"
    split_dirs: dict[str, Path] = {}
    for folder in child_dirs(root):
        split = naming.split_name(folder.name)
        if split is None:
            log.warning("ignoring folder %s: not a split folder (train/validation/test)", folder)
            continue
        if split in split_dirs:
            raise DataError(
                f"both {split_dirs[split].name}/ and {folder.name}/ in {root} name the {split} split; "
                "merge or rename one"
            )
        split_dirs[split] = folder
    missing = [s for s in naming.SPLITS if s not in split_dirs]
    if missing:
        found = ", ".join(f"{d.name}/" for d in split_dirs.values()) or "none"
        raise DataError(
            f"paper layout at {root} is missing split folder(s) {', '.join(m + '/' for m in missing)} "
            f"(found: {found}); expected {expected}. "
            "Add the missing folder, or list the images in a manifest without a split column "
            "(layout: manifest) to let raylung make a grouped split"
        )
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for split in naming.SPLITS:
        found_samples, found_bad = _class_samples(cfg, root, split_dirs[split], split, expected)
        samples += found_samples
        skipped += found_bad
    report_bad(skipped, cfg.on_bad_image, str(root))
    return Discovery("paper", root, samples, "file", skipped)


def _discover_folders(cfg: DataConfig) -> Discovery:
    root = _existing_root(cfg)
    samples, skipped = _class_samples(cfg, root, root, None, f"{root}/<class>/images")
    report_bad(skipped, cfg.on_bad_image, str(root))
    if cfg.label_map:
        names = {naming.compact(d.name) for d in child_dirs(root)}
        unused = [k for k in cfg.label_map if naming.compact(k) not in names]
        if unused:
            log.warning("label_map keys %s match no folder in %s", ", ".join(unused), root)
    return Discovery("folders", root, samples, "file", skipped)


def apply_group_regex(samples: list[Sample], pattern: str) -> list[Sample]:
    """Group by the regex on each file name: named group ``group``, else group 1, else the match."""
    regex = re.compile(pattern)
    grouped: list[Sample] = []
    unmatched: list[str] = []
    for sample in samples:
        match = regex.search(Path(sample.path).name)
        if match is None:
            unmatched.append(Path(sample.path).name)
            continue
        if "group" in regex.groupindex:
            key = match.group("group")
        else:
            key = match.group(1) if regex.groups else match.group(0)
        grouped.append(replace(sample, group=key))
    if unmatched:
        raise DataError(
            f"group_regex {pattern!r} matches no group in {len(unmatched)} file name(s), e.g. "
            f"{', '.join(unmatched[:MAX_LISTED])}; fix the regex so every file name yields a group"
        )
    return grouped
