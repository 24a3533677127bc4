"""Start-up cost of checking MDS shards against the hashes in their ``index.json`` (``data.validate_hash``).

``m2bert-pretrain`` checks every local shard before it builds a model (``m2bert.data.shards.check_shards``):
sizes and sample tables always, and by default (``data.validate_hash=auto``) the cheapest hash the index holds,
xxh64. This measures that check without a hash (``null``), with xxh64 (the default) and with sha1, on two
datasets our converter's way (zstd shards of at most 64 MiB raw, both hashes in the index):

* the C4 sample in ``../shared/data/c4``, converted with ``m2bert-convert-c4`` (raw text);
* about ``--synthetic-gb`` GB on disk of synthetic pre-tokenised rows (Zipf-distributed uint16 ids, so they
  compress roughly like text), written with streaming's MDSWriter and deleted afterwards.

Each check runs ``--repeats`` times warm (shards in the page cache, as right after a conversion or a previous
run) and cold (each shard's pages dropped first with ``posix_fadvise(DONTNEED)``, so it is read from disk).
Prints one JSON object; with ``--out``, writes ``NAME.json`` and ``NAME.md`` there.

    python bench/hash_validation.py --c4 ../shared/data/c4 --out bench/results
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from m2bert.machine import cpu_name
from m2bert import cli_help
from m2bert.paths import shared_dir

log = logging.getLogger("bench.hash_validation")
MODES = {"without": None, "xxh64": "xxh64", "sha1": "sha1"}  # data.validate_hash: null, auto (= xxh64), sha1


def _shard_files(split_dir: Path) -> list[Path]:
    from m2bert.data.shards import check_layout

    return [split_dir / (s.get("zip_data") or s["raw_data"])["basename"] for s in check_layout(split_dir)]


def _drop_cache(files: list[Path]) -> None:
    """Evict the files' pages from the page cache (only these files; flushed first, as dirty pages stay)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def convert_c4(c4: Path, work: Path) -> Path:
    from m2bert.data.convert_c4 import convert

    convert(str(c4), str(work / "c4"), splits=("train",), progress=False)
    return work / "c4" / "train"


def write_synthetic(work: Path, gigabytes: float, row_len: int, vocab: int, seed: int) -> Path:
    """Rows of ``row_len`` Zipf-distributed token ids, written as m2bert-convert-c4 writes pre-tokenised shards,
    until the compressed shards on disk reach ``gigabytes``."""
    from streaming import MDSWriter

    from m2bert.data.shards import HASH_ALGOS

    out = work / "synthetic" / "train"
    rng = np.random.default_rng(seed)
    target = gigabytes * 1e9
    with MDSWriter(columns={"tokens": f"ndarray:uint16:{row_len}"}, out=str(out), compression="zstd",
                   size_limit=1 << 26, hashes=sorted(HASH_ALGOS)) as writer:
        rows = 0
        while True:
            block = (rng.zipf(1.3, size=(4096, row_len)) + 999) % vocab  # a long tail, as token frequencies have
            for row in block.astype(np.uint16):
                writer.write({"tokens": row})
            rows += len(block)
            if sum(f.stat().st_size for f in out.glob("*.zstd")) >= target:
                break
    log.info("synthetic: %d rows of %d tokens", rows, row_len)
    return out


def measure(split_dir: Path, repeats: int) -> dict[str, Any]:
    from m2bert.data.shards import check_shards

    files = _shard_files(split_dir)
    index = json.loads((split_dir / "index.json").read_text())
    disk = sum(f.stat().st_size for f in files)
    raw = sum(s["raw_data"]["bytes"] for s in index["shards"])
    seconds: dict[str, dict[str, list[float]]] = {m: {"warm": [], "cold": []} for m in MODES}
    samples = check_shards(split_dir, None)  # and the first read puts the shards in the page cache
    for _ in range(repeats):
        for mode, algo in MODES.items():  # interleaved: the machine's drift hits every mode alike
            for state in ("cold", "warm"):
                if state == "cold":
                    _drop_cache(files)
                t0 = time.perf_counter()
                assert check_shards(split_dir, algo) == samples
                seconds[mode][state].append(time.perf_counter() - t0)
    gb = disk / 1e9
    median = {m: {s: statistics.median(v) for s, v in by_state.items()} for m, by_state in seconds.items()}
    return {
        "path": str(split_dir), "shards": len(files), "samples": samples, "bytes_on_disk": disk, "gb_on_disk": gb,
        "raw_bytes": raw, "compression_ratio": raw / disk,
        "seconds": seconds, "median_seconds": median,
        "added_seconds_per_gb": {m: {s: (median[m][s] - median["without"][s]) / gb for s in ("warm", "cold")}
                                 for m in MODES if m != "without"},
    }


def _machine() -> dict[str, Any]:
    import streaming
    import xxhash

    return {"platform": platform.platform(), "processor": cpu_name(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "streaming": streaming.__version__, "xxhash": xxhash.VERSION}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="m2bert-hash-bench-", dir=args.work))
    try:
        datasets = {"c4_sample": measure(convert_c4(Path(args.c4), work), args.repeats)}
        synthetic = write_synthetic(work, args.synthetic_gb, args.row_len, args.vocab, args.seed)
        datasets[f"synthetic_{args.synthetic_gb:g}gb"] = measure(synthetic, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the data is only for this measurement
    return {
        "benchmark": "hash_validation",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": _machine(),
        "command": "python bench/hash_validation.py " + " ".join(args.argv),
        "what": "seconds of m2bert.data.shards.check_shards(split, validate_hash) per split; without = "
                "data.validate_hash=null (sizes and sample tables only), xxh64 = the default (auto)",
        "repeats": args.repeats,
        "synthetic": {"row_len": args.row_len, "vocab": args.vocab, "ids": "Zipf(1.3) tail over the vocabulary",
                      "seed": args.seed},
        "datasets": datasets,
    }


def write(result: dict[str, Any], out: Path, name: str) -> None:
    from m2bert.atomic import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{name}.json", result)
    r = result
    md = [
        "# Start-up cost of shard hash validation (`data.validate_hash`)",
        "",
        f"{r['date']}, {r['machine']['processor']}, {r['machine']['cpus']} CPUs (shared), "
        f"streaming {r['machine']['streaming']}, xxhash {r['machine']['xxhash']}.",
        f"Command: `{r['command']}`",
        "",
        "Seconds of the start-up shard check per split (median of "
        f"{r['repeats']}); warm: shards in the page cache, cold: read from disk. `without` is "
        "`data.validate_hash=null` (sizes and sample tables only); `xxh64` is the default (`auto`).",
        "",
        "| dataset | shards | GB on disk | cache | without (s) | xxh64 (s) | sha1 (s) | xxh64 added s/GB | sha1 added s/GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, d in r["datasets"].items():
        for state in ("warm", "cold"):
            m, add = d["median_seconds"], d["added_seconds_per_gb"]
            md.append(f"| {key} | {d['shards']} | {d['gb_on_disk']:.4f} | {state} | {m['without'][state]:.4f} | "
                      f"{m['xxh64'][state]:.4f} | {m['sha1'][state]:.4f} | {add['xxh64'][state]:.2f} | "
                      f"{add['sha1'][state]:.2f} |")
    md.append("")
    atomic_write_text(out / f"{name}.md", "\n".join(md))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = cli_help.ArgumentParser(__doc__)
    p.add_argument("--c4", default=str(shared_dir() / "data" / "c4"), help="the C4 sample (file or folder)")
    p.add_argument("--synthetic-gb", type=float, default=1.0, help="size on disk of the synthetic dataset (GB)")
    p.add_argument("--row-len", type=int, default=1024, help="tokens per synthetic row")
    p.add_argument("--vocab", type=int, default=30522, help="token ids of the synthetic rows are below this")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic token ids")
    p.add_argument("--repeats", type=int, default=3, help="timed checks per mode and cache state")
    p.add_argument("--work", default=None, help="folder for the temporary datasets (default: the system's temp)")
    cli_help.add_result_args(p, "hash_validation_cpu")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if not Path(args.c4).exists():
        p.error(f"{args.c4} not found: pass --c4 with the C4 sample (../shared/data/c4)")
    cli_help.refuse_overwrite(p, args)
    result = run(args)
    if args.out:
        write(result, Path(args.out), args.name)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
