"""Finding image files in folders and screening them cheaply before anything is decoded.

Screening reads only each file's first bytes (a few microseconds a file), so a ``.jpeg`` that
is really an HTML error page, an empty file or a macOS ``._`` resource fork is caught at
discovery, not mid-epoch. Truncated images need a full decode; the cache build (or the
Dataset's validation pass without a cache) catches those.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from raylung.data.images import has_image_extension, sniff_format
from raylung.errors import DataError

log = logging.getLogger(__name__)
MAX_LISTED = 5


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def child_dirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted, so discovery order never depends on the filesystem."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted; other files are skipped and logged."""
    images = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if is_hidden(path, folder):
            log.debug("ignoring hidden file %s", path)
        elif has_image_extension(path):
            images.append(path)
        else:
            log.debug("ignoring non-image file %s", path)
    return images


def screen(paths: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Split ``paths`` into readable-looking files and (path, reason) for the rest; the caller
    reports all bad files of a dataset at once with :func:`report_bad`."""
    good: list[Path] = []
    bad: list[tuple[str, str]] = []
    for path in paths:
        try:
            kind = sniff_format(path)
            reason = None if kind else "not a JPEG, PNG or TIFF file (unknown or empty content)"
        except OSError as exc:
            reason = str(exc)
        if reason is None:
            good.append(path)
        else:
            bad.append((str(path), reason))
    return good, bad


def report_bad(bad: list[tuple[str, str]], on_bad_image: Literal["error", "skip"], where: str) -> None:
    """Raise (error) or warn (skip) about bad files, naming the first few and the fix."""
    if not bad:
        return
    listed = "; ".join(f"{p} ({r})" for p, r in bad[:MAX_LISTED])
    more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    if on_bad_image == "error":
        raise DataError(
            f"{len(bad)} unreadable image file(s) in {where}: {listed}{more}. Fix or remove them, "
            "or set data.on_bad_image: skip to leave them out (they are counted and listed)"
        )
    log.warning("skipping %d unreadable image file(s) in %s: %s%s", len(bad), where, listed, more)
