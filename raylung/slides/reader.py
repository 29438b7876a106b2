"""Open a whole slide with OpenSlide when it is installed (the ``wsi`` extra), else with tifffile.

OpenSlide reads the vendor formats (SVS, NDPI, MRXS, SCN, ...) and tiled TIFF; tifffile reads
plain and pyramidal TIFF (SVS too, being TIFF) without a native library, so the package works on
a machine where only pip wheels can be installed. Both backends answer through :class:`Slide`:
level sizes and downsamples, microns per pixel when the file states it, RGB regions and a
thumbnail. Any failure to open or decode raises :class:`SlideError` naming the file, so a batch
run can report it and go on with the other slides.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from raylung.errors import DataError
from raylung.extras import install_hint, require_extra

log = logging.getLogger(__name__)

# What `raylung data tile` and `raylung predict --slides` pick up from folders.
SLIDE_EXTENSIONS = frozenset({".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".tif", ".tiff"})
_SVS_MPP = re.compile(r"MPP\s*=\s*([0-9.]+)")


class SlideError(DataError):
    """A slide that cannot be opened or read; the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"slide {Path(path).name}: {reason}")
        self.path, self.reason = Path(path), reason


def openslide_available() -> bool:
    """True when openslide-python and its library (openslide-bin) import."""
    if importlib.util.find_spec("openslide") is None:
        return False
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def slide_name(path: str | Path) -> str:
    """The slide's key in labels, folders and CSVs: the file name without its extension(s)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


@dataclass
class Slide:
    """One open slide. Coordinates are level-0 pixels; regions come back as RGB uint8.

    Attributes:
        path: the file.
        dimensions: (width, height) of each level, level 0 first.
        mpp: microns per level-0 pixel, or None when the file does not state it.
        backend: ``openslide`` or ``tifffile``.
    """

    path: Path
    dimensions: list[tuple[int, int]]
    mpp: float | None
    backend: str
    _region: Callable[[int, int, int, int, int], np.ndarray] = field(repr=False)
    _close: Callable[[], None] = field(repr=False, default=lambda: None)

    @property
    def name(self) -> str:
        return slide_name(self.path)

    @property
    def downsamples(self) -> list[float]:
        width = self.dimensions[0][0]
        return [width / w for w, _ in self.dimensions]

    def best_level(self, downsample: float) -> int:
        """The most reduced level still at least as fine as `downsample` (so we only shrink)."""
        fits = [i for i, d in enumerate(self.downsamples) if d <= downsample * 1.01]
        return max(fits, key=lambda i: self.downsamples[i]) if fits else 0

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB pixels of `level` whose top-left corner is level-0 (x, y); outside the slide is white."""
        try:
            return self._region(x, y, level, width, height)
        except SlideError:
            raise
        except Exception as exc:  # every backend has its own errors; name the slide, keep the cause
            raise SlideError(self.path, f"cannot read region at ({x}, {y}): {exc}") from exc

    def thumbnail(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """An RGB overview whose longest side is at most `max_side`, and its downsample from level 0."""
        width, height = self.dimensions[0]
        downsample = max(width, height) / max_side if max(width, height) > max_side else 1.0
        level = self.best_level(downsample)
        w, h = self.dimensions[level]
        image = self.read_region(0, 0, level, w, h)
        size = (max(1, round(width / downsample)), max(1, round(height / downsample)))
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return image, width / size[0]

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_slide(path: str | Path, backend: str = "auto") -> Slide:
    """Open `path` with OpenSlide (``auto`` when installed) or tifffile; SlideError if neither can."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SlideError(path, "file not found")
    if backend not in ("auto", "openslide", "tifffile"):
        raise ValueError(f"backend {backend!r} is not auto, openslide or tifffile")
    if backend == "openslide":
        require_extra("wsi", "the OpenSlide backend")
    use_openslide = backend == "openslide" or (backend == "auto" and openslide_available())
    if use_openslide:
        return _open_openslide(path)
    if path.suffix.lower() not in (".tif", ".tiff", ".svs"):
        raise SlideError(path, f"only TIFF/SVS can be read without OpenSlide; {install_hint('wsi')}")
    return _open_tifffile(path)


def _open_openslide(path: Path) -> Slide:
    import openslide

    try:
        handle = openslide.OpenSlide(str(path))
    except Exception as exc:  # OpenSlideError, OpenSlideUnsupportedFormatError, OSError
        raise SlideError(path, f"OpenSlide cannot open it: {exc}") from exc
    props = handle.properties
    mpp = _float(props.get(openslide.PROPERTY_NAME_MPP_X))
    if mpp is None:  # generic TIFF: OpenSlide passes the resolution tags through
        mpp = _mpp_from_resolution(_float(props.get("tiff.XResolution")), props.get("tiff.ResolutionUnit"))

    def region(x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        rgba = np.asarray(handle.read_region((x, y), level, (width, height)))
        if rgba[:, :, 3].min() == 255:
            return np.ascontiguousarray(rgba[:, :, :3])
        alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0  # transparent = no data: show as white
        return (rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)

    return Slide(path, [tuple(d) for d in handle.level_dimensions], mpp, "openslide", region, handle.close)


def _open_tifffile(path: Path) -> Slide:
    """Pyramid levels: the first series' levels plus other pages of the same aspect, largest first.

    Each level is decoded whole on first use and kept: fine for the small and mid-sized TIFFs
    this fallback is for; large vendor slides want OpenSlide.
    """
    import tifffile

    try:
        tif = tifffile.TiffFile(str(path))
        series = tif.series[0]
        base = series.levels[0]
        base_hw = _hw(base.shape, base.axes)
        arrays = [(base_hw, base)]
        for candidate in [*series.levels[1:], *(lvl for s in tif.series[1:] for lvl in s.levels)]:
            hw = _hw(candidate.shape, candidate.axes)
            if abs(hw[1] / hw[0] - base_hw[1] / base_hw[0]) < 0.02 * base_hw[1] / base_hw[0] and hw < base_hw:
                arrays.append((hw, candidate))
        arrays.sort(key=lambda item: -item[0][1])
        page = tif.pages[0]
        mpp = _tifffile_mpp(page)
    except Exception as exc:
        raise SlideError(path, f"not a readable TIFF: {exc}") from exc
    decoded: dict[int, np.ndarray] = {}

    def region(x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        if level not in decoded:
            decoded[level] = _rgb(arrays[level][1].asarray(), arrays[level][1].axes)
        image = decoded[level]
        scale = base_hw[1] / arrays[level][0][1]
        lx, ly = round(x / scale), round(y / scale)
        out = np.full((height, width, 3), 255, np.uint8)
        x0, y0 = max(lx, 0), max(ly, 0)
        x1, y1 = min(lx + width, image.shape[1]), min(ly + height, image.shape[0])
        if x1 > x0 and y1 > y0:
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = image[y0:y1, x0:x1]
        return out

    dims = [(hw[1], hw[0]) for hw, _ in arrays]
    return Slide(path, dims, mpp, "tifffile", region, tif.close)


def _hw(shape: tuple[int, ...], axes: str) -> tuple[int, int]:
    return shape[axes.index("Y")], shape[axes.index("X")]


def _rgb(array: np.ndarray, axes: str) -> np.ndarray:
    if "S" not in axes:
        array = array[..., None]
    array = array.reshape(array.shape[-3:])
    if array.dtype != np.uint8:
        top = float(array.max()) or 1.0
        array = (array.astype(np.float32) * (255.0 / top)).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _mpp_from_resolution(pixels_per_unit: float | None, unit: object) -> float | None:
    """TIFF XResolution is pixels per unit; unit 2 = inch, 3 = centimetre (1 = none: no mpp)."""
    if pixels_per_unit is None:
        return None
    unit = str(unit).lower()
    if unit in ("3", "centimeter", "resunit.centimeter"):
        return 1e4 / pixels_per_unit
    if unit in ("2", "inch", "resunit.inch"):
        return 25400.0 / pixels_per_unit
    return None


def _tifffile_mpp(page: object) -> float | None:
    description = getattr(page, "description", "") or ""
    found = _SVS_MPP.search(description)
    if found:
        return _float(found.group(1))
    tags = page.tags  # type: ignore[attr-defined]
    if "XResolution" not in tags:
        return None
    numerator, denominator = tags["XResolution"].value
    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2
    return _mpp_from_resolution(numerator / denominator if denominator else None, int(unit))
