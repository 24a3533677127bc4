"""Start-up checks of local MDS shards against their ``index.json``, and the shard error type.

Streaming notices a missing, truncated or corrupt shard only when it reads it — in a background
thread whose exception the main process may never see (a truncated ``.mds.zstd`` ended an epoch
with zero batches, so training looped forever), or as "Relative sample index N is not present".
These checks run once before any model is built and name the shard file and the fix.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RECONVERT = "re-convert the split with m2bert-convert-c4 --force"
HASH_ALGOS = ("sha1", "xxh64")  # what m2bert-convert-c4 writes into index.json


class ShardError(ValueError):
    """A shard that cannot be read as its index.json describes it."""


def _check_raw_header(path: Path, samples: int) -> None:
    """An MDS shard starts with its sample count, (count + 1) uint32 offsets (the first one past the
    header and the shard's config), then the samples, ending at the last offset; check them."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            raise ShardError(f"{path}: {size} bytes, too short for an MDS shard; {RECONVERT}")
        n = int(np.frombuffer(head, np.uint32)[0])
        if n != samples:
            raise ShardError(f"{path}: holds {n} samples, index.json says {samples}; {RECONVERT}")
        raw = f.read(4 * (n + 1))
    if len(raw) < 4 * (n + 1):
        raise ShardError(f"{path}: truncated sample table ({size} bytes); {RECONVERT}")
    offsets = np.frombuffer(raw, np.uint32).astype(np.int64)
    if offsets[0] < 4 + 4 * (n + 1) or np.any(np.diff(offsets) < 0) or offsets[-1] != size:
        raise ShardError(f"{path}: corrupt sample offsets (file is {size} bytes); {RECONVERT}")


def check_shards(split_dir: str | Path, validate_hash: str | None = None) -> int:
    """Every shard ``index.json`` lists is present in the form it lists (raw, or compressed when the
    raw file is absent) with the listed size and sample table; with ``validate_hash``, its hash
    matches too. Returns the number of samples. Local data only (a remote is checked as it downloads).
    """
    from streaming.base.hashing import get_hash

    folder = Path(split_dir)
    index_path = folder / "index.json"
    try:
        index = json.loads(index_path.read_text())
        shards: list[dict[str, Any]] = index["shards"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{index_path}: not a readable MDS index ({type(e).__name__}: {e}); {RECONVERT}") from e
    total = 0
    for shard in shards:
        raw_info, zip_info = shard.get("raw_data") or {}, shard.get("zip_data") or {}
        raw = folder / raw_info.get("basename", "?")
        if raw.is_file():
            path, info = raw, raw_info
        elif zip_info and (folder / zip_info["basename"]).is_file():
            path, info = folder / zip_info["basename"], zip_info
        else:
            names = " or ".join(str(folder / i["basename"]) for i in (raw_info, zip_info) if i)
            raise ShardError(f"{names} is missing (listed in {index_path}); {RECONVERT}")
        if path.stat().st_size != int(info["bytes"]):
            raise ShardError(f"{path}: {path.stat().st_size} bytes on disk, index.json says {info['bytes']} "
                             f"(truncated or replaced); {RECONVERT}")
        if path is raw:
            _check_raw_header(raw, int(shard["samples"]))
        if validate_hash:
            hashes = info.get("hashes") or {}
            if validate_hash not in hashes:
                raise ShardError(f"data.validate_hash={validate_hash}: {index_path} has no {validate_hash} hashes "
                                 f"(it has {sorted(hashes) or 'none'}); {RECONVERT} (it writes {list(HASH_ALGOS)}), "
                                 f"or set data.validate_hash=null")
            if get_hash(validate_hash, path.read_bytes()) != hashes[validate_hash]:
                raise ShardError(f"{path}: {validate_hash} checksum does not match index.json (corrupt); {RECONVERT}")
        total += int(shard["samples"])
    return total


def shard_file(dataset: Any, shard_id: int) -> str:
    """The local path of one shard of a StreamingDataset, for error messages."""
    try:
        stream = dataset.streams[int(dataset.stream_per_shard[shard_id])]
        reader = dataset.shards[shard_id]
        raw_info, zip_info = reader.file_pairs[0]
        folder = Path(stream.local) / (stream.split or "")
        if zip_info is not None and not (folder / raw_info.basename).is_file():
            return str(folder / zip_info.basename)
        return str(folder / raw_info.basename)
    except (AttributeError, IndexError, KeyError, TypeError):
        return f"shard {shard_id}"
