"""Start-up checks of local MDS shards against their ``index.json``, and the shard error type.

Streaming notices a missing, truncated or corrupt shard only when it reads it — in a background
thread whose exception the main process may never see (a truncated ``.mds.zstd`` ended an epoch
with zero batches, so training looped forever), or as "Relative sample index N is not present".
These checks run once before any model is built and name the shard file and the fix.

``index.json`` is input too: streaming joins each shard's ``basename`` to the data folder and
writes (decompresses) or deletes files there, so a basename must stay inside its split folder.
And a flipped byte in a compressed shard decompresses to valid-looking rows, so shards are
hashed against the index by default (``data.validate_hash=auto``: the cheapest hash it holds).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RECONVERT = "re-convert the split with m2bert-convert-c4 --force"
HASH_ALGOS = ("xxh64", "sha1")  # what m2bert-convert-c4 writes into index.json, cheapest first
AUTO_HASH = "auto"  # validate_hash=auto: the cheapest of HASH_ALGOS the index holds (none: unchecked)
FILE_FIELDS = ("raw_data", "zip_data")  # a shard's files in index.json: the raw form and the compressed one


class ShardError(ValueError):
    """A shard that cannot be read as its index.json describes it."""


def read_index(index_path: str | Path) -> list[dict[str, Any]]:
    """The ``shards`` list of an MDS ``index.json``; an unreadable one is a ShardError naming it."""
    try:
        shards = json.loads(Path(index_path).read_text())["shards"]
        if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
            raise TypeError("'shards' is not a list of objects")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{index_path}: not a readable MDS index ({type(e).__name__}: {e}); {RECONVERT}") from e
    return shards


def check_basenames(index_path: str | Path, shards: list[dict[str, Any]], folder: str | Path) -> None:
    """Every file a shard lists resolves inside ``folder`` (no absolute path, no ``..``, no symlink out of
    it): streaming decompresses into, downloads to and deletes these paths, so a crafted index would
    otherwise write or delete files anywhere. Run before streaming sees the index."""
    root = Path(folder).resolve()
    for i, shard in enumerate(shards):
        for field in FILE_FIELDS:
            info = shard.get(field)
            if info is None and field == "zip_data":
                continue  # an uncompressed shard
            name = info.get("basename") if isinstance(info, dict) else None
            where = f"{index_path}: shards[{i}].{field}.basename={name!r}"
            if not isinstance(name, str) or not name:
                raise ShardError(f"{where} is not a file name; {RECONVERT}")
            try:
                target = (root / name).resolve()
                inside = (not os.path.isabs(name) and ".." not in Path(name).parts and target != root
                          and target.is_relative_to(root))
            except (OSError, ValueError):  # a NUL byte, a symlink loop
                inside = False
            if not inside:
                raise ShardError(f"{where} points outside {root} (an absolute path, '..' or a symlink out of the "
                                 f"folder); refusing to read or write it; {RECONVERT}")


def choose_hash(index_path: str | Path, shards: list[dict[str, Any]], validate_hash: str | None) -> str | None:
    """The algorithm to check shards with: ``None`` (opted out), ``auto`` (the cheapest of HASH_ALGOS that every
    listed file has; none if the index has no hashes) or one algorithm, which every file must have."""
    if validate_hash is None:
        return None
    present: set[str] | None = None
    for shard in shards:
        for info in (shard.get(f) for f in FILE_FIELDS):
            if isinstance(info, dict):
                hashes = set(h) if isinstance(h := info.get("hashes"), dict) else set()
                present = hashes if present is None else present & hashes
    present = present or set()
    if validate_hash == AUTO_HASH:
        algo = next((a for a in HASH_ALGOS if a in present), None)
        if algo is None:
            log.warning("%s holds no %s hashes: its shards are not verified (%s to add them)", index_path,
                        " or ".join(HASH_ALGOS), RECONVERT)
        return algo
    if validate_hash not in present:
        raise ShardError(f"data.validate_hash={validate_hash}: {index_path} has no {validate_hash} hashes "
                         f"(it has {sorted(present) or 'none'}); {RECONVERT} (it writes {list(HASH_ALGOS)}), "
                         f"or set data.validate_hash=null (no check) or auto")
    return validate_hash


def file_hash(algo: str, path: Path, chunk: int = 1 << 20) -> str:
    """The hex digest streaming's ``get_hash(algo, data)`` gives a file's bytes, read in chunks into one buffer:
    no copy of a whole shard in memory, and about 3x faster than reading a 64 MiB shard whole on our CPU."""
    import hashlib

    import xxhash

    h = getattr(xxhash, algo)() if algo in xxhash.algorithms_available else hashlib.new(algo)
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


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


def _shard_path(folder: Path, index_path: Path, i: int, shard: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The file streaming will read shard ``i`` from (raw, or compressed when the raw file is absent) and its
    index entry; a missing one is a ShardError naming it."""
    raw_info, zip_info = shard["raw_data"], shard.get("zip_data")
    raw = folder / raw_info["basename"]
    zipped = folder / zip_info["basename"] if zip_info else None
    if raw.is_file():
        if zipped is not None and not zipped.is_file():
            # Streaming deletes the raw file of a compressed shard whose compressed form is gone, then fails
            # with "path to remote dataset must be provided".
            raise ShardError(f"{zipped} is missing beside {raw.name} (shards[{i}] of {index_path}; streaming "
                             f"would delete {raw.name}); {RECONVERT}")
        return raw, raw_info
    if zipped is not None and zipped.is_file():
        return zipped, zip_info  # type: ignore[return-value]
    names = " or ".join(str(p) for p in (raw, zipped) if p is not None)
    raise ShardError(f"{names} is missing (listed in {index_path}); {RECONVERT}")


def check_layout(split_dir: str | Path, index_path: str | Path | None = None) -> list[dict[str, Any]]:
    """The cheap part of :func:`check_shards`, which a StreamingDataset over local data needs before streaming
    touches the folder: every listed file inside it, and each shard present in a form streaming keeps.
    ``index_path`` defaults to the folder's ``index.json``. Returns the shard entries."""
    folder = Path(split_dir)
    index_path = Path(index_path or folder / "index.json")
    shards = read_index(index_path)
    check_basenames(index_path, shards, folder)
    for i, shard in enumerate(shards):
        _shard_path(folder, index_path, i, shard)
    return shards


def check_shards(split_dir: str | Path, validate_hash: str | None = AUTO_HASH) -> int:
    """Every shard ``index.json`` lists stays inside the split folder and is present in the form it lists (raw,
    or compressed when the raw file is absent) with the listed size and sample table; its hash matches too
    (``validate_hash``: ``auto``, an algorithm, or ``None`` to skip). Returns the number of samples. Local data
    only (a remote is checked as it downloads)."""
    folder = Path(split_dir)
    index_path = folder / "index.json"
    shards = check_layout(folder, index_path)
    algo = choose_hash(index_path, shards, validate_hash)
    total = 0
    for i, shard in enumerate(shards):
        path, info = _shard_path(folder, index_path, i, shard)
        if path.stat().st_size != int(info["bytes"]):
            raise ShardError(f"{path}: {path.stat().st_size} bytes on disk, index.json says {info['bytes']} "
                             f"(truncated or replaced); {RECONVERT}")
        if info is shard["raw_data"]:
            _check_raw_header(path, int(shard["samples"]))
        if algo is not None and file_hash(algo, path) != info["hashes"][algo]:
            raise ShardError(f"{path}: {algo} checksum does not match index.json (corrupt); {RECONVERT}")
        total += int(shard["samples"])
    return total


def shard_file(dataset: Any, shard_id: int) -> str:
    """The local path of one shard of a StreamingDataset, for error messages; a downloaded shard's URL too."""
    try:
        stream = dataset.streams[int(dataset.stream_per_shard[shard_id])]
        reader = dataset.shards[shard_id]
        raw_info, zip_info = reader.file_pairs[0]
        folder = Path(stream.local) / (stream.split or "")
        name = zip_info.basename if zip_info is not None and not (folder / raw_info.basename).is_file() else \
            raw_info.basename
        remote = f" (downloaded from {stream.remote.rstrip('/')}/{stream.split + '/' if stream.split else ''}{name})" \
            if stream.remote else ""
        return str(folder / name) + remote
    except (AttributeError, IndexError, KeyError, TypeError):
        return f"shard {shard_id}"


def check_remote_shards(index_path: str | Path, listing: dict[str, dict[str, Any]], url: str) -> int:
    """A remote split's start-up check, from one listing of the store: every shard ``index.json`` lists is there
    in the form streaming downloads (compressed when listed so) with the listed size; the hash is checked as each
    shard downloads (``validate_hash``). Returns the number of samples."""
    total = 0
    for shard in read_index(Path(index_path)):
        info = shard.get("zip_data") or shard["raw_data"]
        found = listing.get(info["basename"])
        where = url.rstrip("/") + "/" + info["basename"]
        if found is None:
            raise ShardError(f"{where} is missing (listed in its index.json); {RECONVERT}")
        if found["size"] != int(info["bytes"]):
            raise ShardError(f"{where}: {found['size']} bytes in the store, index.json says {info['bytes']} "
                             f"(truncated or replaced); {RECONVERT}")
        total += int(shard["samples"])
    return total
