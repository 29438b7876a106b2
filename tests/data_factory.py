"""Small image trees for tests: every layout raylung reads, plus broken files.

Import as ``from data_factory import ...`` (pytest puts ``tests/`` on ``sys.path`` because it
holds a rootdir conftest and no ``__init__.py``). Images are tiny (32x24 by default) random
noise seeded per file, so no two files are byte-identical unless a test makes them so.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np

SMALL = (32, 24)  # (width, height)
PAPER_CLASSES = ("Good Cancer", "bad-cancer", "GoodNonCancer", "BAD_NON_CANCER")


def image_array(
    size: tuple[int, int] = SMALL, channels: int = 3, dtype: type = np.uint8, seed: int = 0
) -> np.ndarray:
    """Random HxWxC (or HxW when ``channels`` is 1) noise of the given dtype, seeded."""
    rng = np.random.default_rng(seed)
    high = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, high, shape, endpoint=True, dtype=dtype)
    return rng.random(shape).astype(dtype)


def write_image(path: str | Path, array: np.ndarray | None = None, seed: int | None = None, **kwargs) -> Path:
    """Write ``array`` (or seeded noise) as JPEG/PNG/TIFF by the suffix; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = image_array(seed=zlib.crc32(str(path).encode()) if seed is None else seed, **kwargs)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, array)
    elif suffix == ".png":
        import cv2

        bgr = array[:, :, ::-1] if array.ndim == 3 and array.shape[2] in (3, 4) else array
        if array.ndim == 3 and array.shape[2] == 4:
            bgr = array[:, :, [2, 1, 0, 3]]
        cv2.imwrite(str(path), np.ascontiguousarray(bgr))
    else:
        from PIL import Image

        Image.fromarray(array.squeeze() if array.ndim == 3 and array.shape[2] == 1 else array).save(
            path, format="JPEG", quality=95
        )
    return path


def make_paper_tree(
    root: str | Path,
    per_class: int = 3,
    splits: tuple[str, ...] = ("train", "VAL", "Test"),
    classes: tuple[str, ...] = PAPER_CLASSES,
    suffix: str = ".png",
) -> Path:
    """ROOT/<split>/<class>/img_<i>.png with deliberately odd spellings."""
    root = Path(root)
    for split in splits:
        for name in classes:
            for i in range(per_class):
                write_image(root / split / name / f"img_{i}{suffix}")
    return root


def make_folder_tree(
    root: str | Path,
    classes: dict[str, int] | None = None,
    copies: int = 2,
    suffix: str = ".png",
) -> Path:
    """ROOT/<class>/<class>_g<group>_c<copy>.png: ``classes`` maps folder -> number of groups."""
    root = Path(root)
    classes = classes or {"lung_aca": 4, "lung_scc": 4, "lung_n": 8}
    for name, groups in classes.items():
        for group in range(groups):
            for copy in range(copies):
                write_image(root / name / f"{name}_g{group}_c{copy}{suffix}")
    return root


def make_manifest_tree(
    root: str | Path,
    groups_per_label: int = 6,
    copies: int = 2,
    split: bool = False,
    columns: tuple[str, str, str] = ("path", "label", "group"),
    labels: tuple[str, str] = ("cancer", "non_cancer"),
) -> Path:
    """Images under ROOT/img and ROOT/manifest.csv; group ``g<label><n>``, optional split column."""
    root = Path(root)
    rows = []
    for label_index, label in enumerate(labels):
        for group in range(groups_per_label):
            # the last two groups of each label are validation and test
            side = ("train", "validation", "test")[max(0, group - groups_per_label + 3)]
            for copy in range(copies):
                relative = f"img/{label}_{group}_{copy}.png"
                write_image(root / relative)
                row = {columns[0]: relative, columns[1]: label, columns[2]: f"g{label_index}-{group}"}
                if split:
                    row["split"] = side
                rows.append(row)
    write_manifest(root / "manifest.csv", rows)
    return root


def write_manifest(path: str | Path, rows: list[dict[str, str]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes: a truncated download."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def write_garbage(path: str | Path, text: bytes = b"<html>404 Not Found</html>") -> Path:
    """A file with an image name but no image inside."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    return path
