"""A W&B run's folders on disk: one per process that opened the run, and which one to sync.

wandb 0.31 writes each ``wandb.init`` of a run id into a folder of its own
(``offline-run-<time>-<id>``), so a run resumed after a crash (``raylung train --resume``, a
restored Tune trial) leaves one folder per process. The earlier ones end where the process
died, often mid-record, and ``wandb sync`` of the run's W&B folder replays the id's folders in
order and stops at the first it cannot read to the end: the user would upload a partial history.

raylung makes the last folder complete instead: a resumed run first logs every epoch its
checkpoint kept (:meth:`raylung.tracking.Tracker.start`), and when it finishes, :func:`supersede`
moves the id's earlier folders to ``superseded/`` beside it: still readable, but one level deeper
than the ``<wandb dir>/*/*.wandb`` that ``wandb sync <wandb dir>`` looks at. A folder is moved
only when the kept one holds every epoch it holds, so nothing is ever hidden from a sync.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SUPERSEDED = "superseded"

# The .wandb file is LevelDB's log format: a 7-byte file header (b":W&B", magic, version), then
# 32 KiB blocks of chunks, each with a 7-byte header (CRC-32, length, type); a payload is one
# protobuf ``Record``, split over FIRST/MIDDLE/LAST chunks when it spans blocks.
_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def run_folders(wandb_dir: Path, run_id: str) -> list[Path]:
    """The folders in `wandb_dir` (where wandb puts ``offline-run-*``) holding run `run_id`,
    oldest first (their names start with the time the process opened the run)."""
    found = Path(wandb_dir).glob(f"*/run-{run_id}.wandb")
    return sorted(path.parent for path in found if not path.parent.is_symlink())  # not latest-run


def payloads(path: Path) -> Iterator[bytes]:
    """The records' bytes of a .wandb file, up to where it can be read: a process killed
    mid-write leaves a torn last chunk, which ends the file here rather than raising."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        return
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's zero padding
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:  # the rest of the block is padding
            pos += left
            continue
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != checksum:
            return  # torn or never written: what follows cannot be trusted
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def logged_epochs(folder: Path) -> list[int]:
    """The epochs (history rows with an ``epoch``) a run folder holds, in the order logged."""
    from wandb.proto import wandb_internal_pb2

    epochs = []
    for path in sorted(Path(folder).glob("*.wandb")):
        for payload in payloads(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") != "history":
                continue
            for item in record.history.item:
                if (item.key or "/".join(item.nested_key)) == "epoch":
                    epochs.append(int(json.loads(item.value_json)))
    return epochs


def supersede(kept: Path, holds: Iterable[int] | None = None) -> list[Path]:
    """Move the earlier folders of `kept`'s run to ``superseded/``; returns where they went.

    Called when a run finishes: from then on `kept` alone is the run's history. A folder holding
    an epoch that `kept` lacks stays where it is (a sync replays it first), and says so. `holds`:
    the epochs `kept` holds, if known; wandb's ``finish()`` returns before its service has
    written the file out, so the run's own tracker says, rather than the file."""
    kept = Path(kept)
    run_ids = [path.stem.removeprefix("run-") for path in kept.glob("run-*.wandb")]
    if not run_ids:
        return []
    holds = set(logged_epochs(kept) if holds is None else holds)
    moved = []
    for folder in run_folders(kept.parent, run_ids[0]):
        if folder == kept:
            continue
        missing = sorted(set(logged_epochs(folder)) - holds)
        if missing:
            log.info("%s keeps epochs %s that %s lacks: left for `wandb sync`", folder, missing, kept.name)
            continue
        target = kept.parent / SUPERSEDED / folder.name
        try:
            target.parent.mkdir(exist_ok=True)
            shutil.move(str(folder), str(target))
        except OSError as exc:  # the run is finished and whole: a folder left in place only costs a sync
            log.warning("could not move %s to %s: %s", folder, target.parent, exc)
            continue
        moved.append(target)
    return moved
