"""Read and write small text files at a local path or a URI (s3://, gs://, file://, ...).

Splits files live with the experiment, which may be remote; pyarrow's filesystems handle the
URIs so raylung needs no per-cloud code. Local writes are atomic (temp file + rename) because
several trials may write the same experiment's splits file at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from raylung.errors import DataError


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def _filesystem(uri: str):  # -> tuple[pyarrow.fs.FileSystem, str]
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with useful text
        raise DataError(f"cannot open storage {uri!r}: {exc}") from exc


def exists(location: str | Path) -> bool:
    if not is_uri(location):
        return Path(location).is_file()
    from pyarrow import fs

    filesystem, path = _filesystem(str(location))
    return filesystem.get_file_info(path).type == fs.FileType.File


def read_text(location: str | Path) -> str:
    """The whole file as UTF-8 text; DataError naming the location when it is absent."""
    if not is_uri(location):
        path = Path(location)
        if not path.is_file():
            raise DataError(f"file not found: {path}")
        return path.read_text(encoding="utf-8-sig")
    filesystem, path = _filesystem(str(location))
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise DataError(f"file not found: {location}") from exc


def write_text(location: str | Path, text: str) -> None:
    """Write atomically: readers see the old file or the new one, never half of one."""
    if is_uri(location):
        filesystem, path = _filesystem(str(location))
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            filesystem.create_dir(parent, recursive=True)
        with filesystem.open_output_stream(path) as stream:
            stream.write(text.encode("utf-8"))
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
