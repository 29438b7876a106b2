"""Experiment storage: a local path or any URI pyarrow understands (s3://, gs://, ...).

On a cluster, trials on different nodes and a resumed driver must see the same checkpoints,
so experiments live on shared storage; pyarrow's filesystems give one code path for all.
"""

from __future__ import annotations

from pathlib import Path

from raylung.errors import ConfigError


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def join(base: str | Path, *parts: str) -> str:
    """Join path parts with '/' for URIs, os rules for local paths (made absolute)."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return str(Path(base).expanduser().resolve().joinpath(*parts))


def resolve_storage(location: str | Path):  # -> tuple[pyarrow.fs.FileSystem, str]
    """(filesystem, path inside it) for a local path or a URI."""
    from pyarrow import fs

    if not is_uri(location):
        return fs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    try:
        return fs.FileSystem.from_uri(str(location))
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with useful text
        raise ConfigError(f"cannot open storage {location!r}: {exc}") from exc


def check_writable(location: str | Path) -> None:
    """Fail at once, with the location, when experiment storage cannot be written."""
    filesystem, path = resolve_storage(location)
    probe = f"{path.rstrip('/')}/.raylung_write_test"
    try:
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(probe) as stream:
            stream.write(b"ok")
        filesystem.delete_file(probe)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not writable"
        raise ConfigError(f"experiment storage {location} is not writable: {exc}") from None


def upload_dir(local: Path, location: str) -> None:
    """Copy a local directory's files to `location` (a URI); a no-op for local storage."""
    if not is_uri(location) or not Path(local).is_dir():
        return
    from pyarrow import fs

    filesystem, path = resolve_storage(location)
    filesystem.create_dir(path, recursive=True)
    fs.copy_files(
        str(Path(local).resolve()),
        path,
        source_filesystem=fs.LocalFileSystem(),
        destination_filesystem=filesystem,
    )


def upload_file_atomic(local_file: Path, location: str) -> None:
    """Copy one local file to `location` (a path or URI) so that readers never see half of it.

    The bytes go to a temporary name beside the destination, which is then moved over it: on a
    local or mounted filesystem the move is atomic, on object stores the new object appears whole.
    A copy cut short (the driver killed mid-upload) leaves the previous copy in place.
    """
    import uuid

    filesystem, path = resolve_storage(location)
    parent, _, name = path.rstrip("/").rpartition("/")
    if parent:
        filesystem.create_dir(parent, recursive=True)
    temporary = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(local_file, "rb") as source, filesystem.open_output_stream(temporary) as stream:
            while chunk := source.read(1 << 20):
                stream.write(chunk)
        filesystem.move(temporary, path)
    except BaseException:
        try:
            filesystem.delete_file(temporary)
        except OSError:
            pass
        raise


def download_files(location: str, names: tuple[str, ...], local: Path) -> list[str]:
    """Copy the named files that exist under `location` (a URI) into `local`; returns them."""
    if not is_uri(location):
        return []
    from pyarrow import fs

    filesystem, path = resolve_storage(location)
    Path(local).mkdir(parents=True, exist_ok=True)
    fetched = []
    for name in names:
        source = f"{path.rstrip('/')}/{name}"
        if filesystem.get_file_info(source).type != fs.FileType.File:
            continue
        with filesystem.open_input_stream(source) as stream:
            (Path(local) / name).write_bytes(stream.read())
        fetched.append(name)
    return fetched
