"""On-disk cache of images already decoded and resized to the training size.

Decoding a 1280x960 image costs far more than augmenting a 320x240 one, and every epoch of every
trial would repeat it. The cache keeps one ``.npy`` (uint8 HxWxC, ``in_chans`` channels, un-
augmented) per (source file, size, resize rule). The key hashes the source's absolute path, byte
size and mtime with ``image_size``, ``keep_aspect``, ``in_chans`` and the decoder version, so
editing or touching a source, or changing the size, makes a new entry; stale entries are never
read (delete the folder to reclaim space). With ``data.stain_normalize`` the entry holds the
normalised tile and the key adds the method, reference and fitted numbers (``none`` adds
nothing, so its entries stay valid); :meth:`ImageCache.get` marks such tiles so the transform
does not normalise them again.

Location: ``data.cache_dir``, else ``$RAYLUNG_CACHE_DIR``, else ``~/.cache/raylung``; entries
under ``images-v1/``. Safe for concurrent builders (several trials, loader processes): an entry
is written to a temp file and renamed into place, and a file lock per key bucket makes sure only
one process decodes a given image. Unreadable sources leave a ``.bad`` marker with the reason,
so a later run reports them without decoding again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from raylung.config import DataConfig
from raylung.data.images import UnreadableImageError, load_image
from raylung.data.stain_normalize import StainNormalizedImage, stain_normalizer
from raylung.progress import progress_bar

log = logging.getLogger(__name__)
CACHE_VERSION = "images-v1"  # bump when decoding or resizing rules change


def cache_root(cfg: DataConfig) -> Path:
    base = cfg.cache_dir or os.environ.get("RAYLUNG_CACHE_DIR") or Path.home() / ".cache" / "raylung"
    return Path(base).expanduser() / CACHE_VERSION


@dataclass
class CacheBuild:
    """What one :meth:`ImageCache.build` did."""

    built: int = 0
    reused: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class ImageCache:
    """Resized uint8 images on disk, keyed by source identity and resize settings."""

    def __init__(self, cfg: DataConfig) -> None:
        self.root = cache_root(cfg)
        self.size = tuple(cfg.image_size)
        self.keep_aspect = cfg.keep_aspect
        self.in_chans = cfg.in_chans
        self.stain = stain_normalizer(cfg)

    def key(self, path: str | Path) -> str:
        source = Path(path).resolve()
        try:
            stat = source.stat()
        except OSError as exc:
            raise UnreadableImageError(path, f"cannot stat: {exc}") from exc
        identity = [CACHE_VERSION, str(source), stat.st_size, stat.st_mtime_ns,
                    list(self.size), self.keep_aspect, self.in_chans]  # fmt: skip
        if self.stain is not None:
            identity.append(self.stain.identity)
        return hashlib.sha1(json.dumps(identity).encode()).hexdigest()

    def entry(self, path: str | Path) -> Path:
        key = self.key(path)
        return self.root / key[:2] / f"{key}.npy"

    def get(self, path: str | Path) -> np.ndarray:
        """The resized image, read from the cache or decoded and stored now."""
        image, _ = self._ensure(path)
        return image if self.stain is None else image.view(StainNormalizedImage)

    def build(self, paths: list[str], workers: int | None = None, *, progress: bool = False) -> CacheBuild:
        """Make sure every path has an entry; returns counts and the unreadable files.

        ``progress`` shows images cached, of how many, on stderr: worth it on a first build,
        which decodes and resizes every image. Off by default: training builds run in Ray
        workers, which draw no bars.
        """
        workers = workers or min(4, os.cpu_count() or 1)
        result = CacheBuild()

        def one(path: str) -> tuple[str, str | None]:
            try:
                return ("built" if self._ensure(path, load=False)[1] else "reused"), None
            except UnreadableImageError as exc:
                return "bad", exc.reason

        with ThreadPoolExecutor(workers) as pool, progress_bar(progress) as bar:
            task = bar.add_task("caching images", total=len(paths))
            for path, (status, reason) in zip(paths, pool.map(one, paths), strict=True):
                if status == "bad":
                    result.bad.append((path, str(reason)))
                elif status == "built":
                    result.built += 1
                else:
                    result.reused += 1
                bar.advance(task)
        log.info("image cache %s: %d built, %d reused, %d unreadable",
                 self.root, result.built, result.reused, len(result.bad))  # fmt: skip
        return result

    def _ensure(self, path: str | Path, load: bool = True) -> tuple[np.ndarray | None, bool]:
        """(image, or None when not ``load``; whether it was built now). Raises UnreadableImageError."""
        entry = self.entry(path)
        if not load and entry.is_file():
            return None, False
        cached = _read(entry) if load else None
        if cached is not None:
            return cached, False
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        entry.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(locks / f"{entry.name[:2]}.lock", preserve_lock_file=True):
            cached = _read(entry)  # another process may have built it while we waited
            if cached is not None:
                return (cached if load else None), False
            marker = entry.with_suffix(".bad")
            if marker.is_file():
                raise UnreadableImageError(path, marker.read_text())
            try:
                image = load_image(path, self.in_chans, self.size, self.keep_aspect)
                if self.stain is not None:
                    image = self.stain(image)
            except UnreadableImageError as exc:
                _atomic_write(marker, exc.reason.encode())
                raise
            _atomic_save(entry, image)
            return image, True


def _read(entry: Path) -> np.ndarray | None:
    try:
        return np.load(entry, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # damaged by hand or by a full disk: rebuild it
        log.warning("rebuilding damaged cache entry %s", entry)
        entry.unlink(missing_ok=True)
        return None


def _atomic_save(entry: Path, image: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{entry.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, image, allow_pickle=False)
        os.replace(tmp, entry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
