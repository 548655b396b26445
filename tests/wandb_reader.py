"""Read an offline W&B run file (``run-*.wandb``) back, for tests.

The file is a log of protobuf ``Record`` messages in the LevelDB log layout
that W&B uses: a 7-byte file header (``:W&B``, magic, version), then 32 KiB
blocks of chunks, each with a 7-byte header (checksum uint32, length
uint16, type uint8: 1 full, 2 first, 3 middle, 4 last). Block tails too
short for a chunk header are zero padding. Checksums are not verified.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

from wandb.proto import wandb_internal_pb2

BLOCK_SIZE = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """Yield every record stored in an offline run file."""
    data = Path(path).read_bytes()
    ident, _magic, _version = FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (header {ident!r})")
    offset = FILE_HEADER.size
    pending = b""
    while offset + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - offset % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            offset += left_in_block
            continue
        _checksum, length, kind = CHUNK_HEADER.unpack_from(data, offset)
        offset += CHUNK_HEADER.size
        payload = data[offset:offset + length]
        offset += length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        elif kind == LAST:
            pending += payload
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        yield record


def read_history(path: Path) -> list[dict]:
    """Return the logged history rows, each a dict of key to decoded value.

    W&B stores a media value (table, image) as one item per field, with the
    logged key and the field name as its ``nested_key``. Those fields are
    gathered back into one dict per key, such as ``{"_type": "table-file",
    "path": ..., "nrows": ...}``.
    """
    rows = []
    for record in iter_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in record.history.item:
            value = json.loads(item.value_json) if item.value_json else None
            names = [item.key] if item.key else list(item.nested_key)
            target = row
            for name in names[:-1]:
                target = target.setdefault(name, {})
            target[names[-1]] = value
        rows.append(row)
    return rows


def read_history_keys(path: Path) -> tuple[set[str], set[int]]:
    """Return the set of history keys and the set of ``trainer/global_step`` values logged."""
    keys: set[str] = set()
    steps: set[int] = set()
    for row in read_history(path):
        keys.update(row)
        if isinstance(row.get("trainer/global_step"), (int, float)):
            steps.add(int(row["trainer/global_step"]))
    return keys, steps


def read_metric_definitions(path: Path) -> dict[str, dict]:
    """Return the ``define_metric`` declarations, keyed by metric name or glob.

    Each value contains ``step_metric``, ``step_sync`` and ``summary`` (the set
    of summary kinds switched on, such as ``{"last"}``). A name declared
    twice keeps its last declaration. Declarations that W&B derived from a
    glob for one concrete key are skipped.
    """
    definitions = {}
    for record in iter_records(path):
        if record.WhichOneof("record_type") != "metric":
            continue
        metric = record.metric
        if metric.expanded_from_glob:
            continue
        summary = {field.name for field, value in metric.summary.ListFields() if value is True}
        definitions[metric.glob_name or metric.name] = {
            "step_metric": metric.step_metric,
            "step_sync": metric.options.step_sync,
            "summary": summary,
        }
    return definitions


def read_config(path: Path) -> dict:
    """Return the run config: the one given to ``wandb.init`` updated by every later config record."""
    config: dict = {}
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            items = record.run.config.update
        elif kind == "config":
            items = record.config.update
        else:
            continue
        for item in items:
            key = item.key or "/".join(item.nested_key)
            config[key] = json.loads(item.value_json)
    return config


def read_run_info(path: Path) -> dict:
    """Return the run's ``group`` and ``job_type`` as set in ``wandb.init``."""
    for record in iter_records(path):
        if record.WhichOneof("record_type") == "run":
            return {"group": record.run.run_group, "job_type": record.run.job_type}
    raise ValueError(f"{path} contains no run record")
