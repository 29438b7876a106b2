"""Decoding rules: any supported file in, a uint8 HxWxC array with C = ``in_chans`` out.

The rules (also in docs/data.md):

* Formats: JPEG, PNG and TIFF, recognised by their magic bytes (an extension only says a file
  is *meant* to be an image; a ``.jpeg`` holding HTML is reported as unreadable).
* Bit depth: uint8 passes through. Anything wider (16-bit, float, int32) is stretched per
  image from its 0.1th to its 99.9th percentile, all channels jointly, to 0..255. 16-bit
  microscopy rarely fills 16 bits (12/14-bit cameras) and exposure varies between
  acquisitions; a fixed /257 would leave most DAPI images nearly black. The joint stretch keeps
  channel ratios; absolute brightness between images is not preserved.
* Channels: alpha is dropped (RGBA -> RGB, gray+alpha -> gray); gray -> 3 channels by
  replication; RGB -> 1 channel by ITU-R BT.601 luminance (0.299 R + 0.587 G + 0.114 B).
  Images with 2 or more than 4 channels are refused: no rule is safe for them.
* Resize: to ``image_size`` (width, height); ``keep_aspect`` fits the longest side and pads
  with black (zero) around the centred image. INTER_AREA downscales, INTER_LINEAR upscales.
  JPEGs are decoded directly at a reduced DCT scale (never below the target size) first,
  which makes 1280x960 -> 320x240 about four times cheaper.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from raylung.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff"})
STRETCH_PERCENTILES = (0.1, 99.9)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
}


class UnreadableImageError(DataError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"unreadable image {path}: {reason}")
        self.path = str(path)
        self.reason = reason


def has_image_extension(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def sniff_format(path: str | Path) -> str | None:
    """'jpeg' / 'png' / 'tiff' from the first bytes, None for anything else (or empty)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return None


def decode(path: str | Path, target: tuple[int, int] | None = None, keep_aspect: bool = False) -> np.ndarray:
    """The image's own pixels, HxWxC (C >= 1) in its own dtype; raises UnreadableImageError.

    ``target`` (width, height, fitted by ``keep_aspect``) lets a JPEG decode at a reduced DCT
    scale that is still no smaller than the size it will be resized to.
    """
    try:
        kind = sniff_format(path)
    except OSError as exc:
        raise UnreadableImageError(path, str(exc)) from exc
    if kind is None:
        raise UnreadableImageError(path, "not a JPEG, PNG or TIFF file (unknown or empty content)")
    try:
        decoder = {"jpeg": _decode_jpeg, "png": _decode_png, "tiff": _decode_tiff}[kind]
        image = decoder(path, target, keep_aspect)
    except UnreadableImageError:
        raise
    except Exception as exc:  # every decoder has its own exception zoo
        raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from exc
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise UnreadableImageError(path, f"unsupported array shape {image.shape}")
    return image


def _decode_jpeg(path: str | Path, target: tuple[int, int] | None, keep_aspect: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode if im.mode in ("L", "RGB") else "RGB"  # CMYK/YCCK JPEGs -> RGB
        if target is not None:
            im.draft(mode, fitted_size(im.width, im.height, target, keep_aspect))
        im.load()  # raises OSError on truncated data
        return np.asarray(im.convert(mode) if im.mode != mode else im)


def _decode_png(path: str | Path, target: tuple[int, int] | None, keep_aspect: bool) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UnreadableImageError(path, "PNG data is corrupt or truncated")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def _decode_tiff(path: str | Path, target: tuple[int, int] | None, keep_aspect: bool) -> np.ndarray:
    import tifffile

    try:
        image = tifffile.imread(str(path), key=0)
    except Exception as tiff_error:  # e.g. JPEG-in-TIFF without imagecodecs: let Pillow try
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                return np.asarray(im)
        except Exception:
            raise tiff_error from None
    image = np.asarray(image)
    # Planar (C, H, W) storage: channels first when the first axis is small and the last is not.
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] > 4:
        image = np.moveaxis(image, 0, -1)
    return np.squeeze(image) if image.ndim > 3 else image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 unchanged; any other dtype stretched per image between robust percentiles."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    values = image.astype(np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    low, high = np.percentile(finite, STRETCH_PERCENTILES)
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:  # a constant image carries no signal
        return np.zeros(image.shape, dtype=np.uint8)
    scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def drop_alpha(image: np.ndarray) -> np.ndarray:
    """RGBA -> RGB and gray+alpha -> gray; other channel counts pass or are refused."""
    channels = image.shape[2]
    if channels == 4:
        return image[:, :, :3]
    if channels == 2:
        return image[:, :, :1]
    if channels in (1, 3):
        return image
    raise ValueError(f"{channels} channels; raylung reads 1 (gray), 3 (RGB) or 4 (RGBA)")


def to_channels(image: np.ndarray, in_chans: int) -> np.ndarray:
    """Convert a uint8 HxWx{1,3} image to ``in_chans`` channels by the documented rule."""
    channels = image.shape[2]
    if channels == in_chans:
        return image
    if channels == 1 and in_chans == 3:
        return np.repeat(image, 3, axis=2)
    if channels == 3 and in_chans == 1:
        luma = image.astype(np.float32) @ _LUMA
        return np.clip(luma + 0.5, 0, 255).astype(np.uint8)[:, :, None]
    raise ValueError(f"cannot convert {channels} channels to {in_chans}")


def fitted_size(width: int, height: int, size: tuple[int, int], keep_aspect: bool) -> tuple[int, int]:
    """(width, height) the image content takes inside ``size`` before any padding."""
    if not keep_aspect:
        return size
    scale = min(size[0] / width, size[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_to(image: np.ndarray, size: tuple[int, int], keep_aspect: bool) -> np.ndarray:
    """Resize HxWxC uint8 to ``size`` = (width, height); a no-op when it already fits."""
    height, width = image.shape[:2]
    if (width, height) == tuple(size):
        return image
    inner = fitted_size(width, height, size, keep_aspect)
    shrinking = inner[0] * inner[1] < width * height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image, inner, interpolation=interpolation)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    if inner == tuple(size):
        return resized
    canvas = np.zeros((size[1], size[0], image.shape[2]), dtype=image.dtype)
    top, left = (size[1] - inner[1]) // 2, (size[0] - inner[0]) // 2
    canvas[top : top + inner[1], left : left + inner[0]] = resized
    return canvas


def load_image(
    path: str | Path,
    in_chans: int,
    size: tuple[int, int] | None = None,
    keep_aspect: bool = False,
) -> np.ndarray:
    """Decode, convert to uint8 ``in_chans`` channels and (when ``size``) resize: the one
    canonical loading path, shared by the cache and the uncached Dataset."""
    image = decode(path, target=size, keep_aspect=keep_aspect)
    try:
        return conform(image, in_chans, size, keep_aspect)
    except ValueError as exc:
        raise UnreadableImageError(path, str(exc)) from exc


def conform(
    image: np.ndarray, in_chans: int, size: tuple[int, int] | None = None, keep_aspect: bool = False
) -> np.ndarray:
    """A decoded (H, W[, C]) array as training sees it: no alpha, uint8, `in_chans` channels,
    resized when `size` is given. ValueError when its channels cannot be made to fit."""
    image = to_channels(to_uint8(drop_alpha(image)), in_chans)
    if size is not None:
        image = resize_to(image, size, keep_aspect)
    return np.ascontiguousarray(image)


def describe(image: np.ndarray) -> str:
    """'uint16 x1' style label of an array's storage, for the size/mode histogram."""
    return f"{image.dtype.name} x{image.shape[2] if image.ndim == 3 else 1}"
