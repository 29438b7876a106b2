"""Read W&B's offline `.wandb` run files back, to check what raylung logged.

A `.wandb` file is a 7-byte header (b":W&B", magic 0xBEE1, version) followed by 32 KiB blocks
of chunks, each with a 7-byte header (CRC-32 of type byte + payload, payload length, chunk
type FULL/FIRST/MIDDLE/LAST) — LevelDB's log framing. Each reassembled payload is one
`wandb_internal_pb2.Record` protobuf, decoded with the classes that ship in the wandb package.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_payloads(path: Path, strict: bool = True) -> list[bytes]:
    """The file's record payloads. `strict` False stops at a torn tail (a writer killed
    mid-record) instead of raising, keeping every record before it."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B" or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file")
    pos, payloads, pending = 7, [], b""
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER:  # zero padding at the end of a block
            pos += left_in_block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        pos += CHUNK_HEADER
        if kind == 0 and length == 0:
            pos += left_in_block - CHUNK_HEADER
            continue
        chunk = data[pos : pos + length]
        pos += length
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            if not strict:
                break
            raise ValueError(f"{path}: CRC mismatch at byte {pos - length}")
        if kind == FULL:
            payloads.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            payloads.append(pending + chunk)
            pending = b""
    return payloads


def read_records(path: Path, strict: bool = True) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    records = []
    for payload in read_payloads(path, strict):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def history_rows(path: Path) -> list[dict[str, Any]]:
    """Every `history` record as {key: decoded JSON value}."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def run_config(path: Path) -> dict[str, Any]:
    """The run's config as logged (the last `config` records win)."""
    config: dict[str, Any] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            for item in record.config.update:
                key = item.key or "/".join(item.nested_key)
                config[key] = json.loads(item.value_json)
        elif kind == "run" and record.run.config.update:
            for item in record.run.config.update:
                key = item.key or "/".join(item.nested_key)
                config[key] = json.loads(item.value_json)
    return config
