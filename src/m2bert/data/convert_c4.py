"""Convert C4 (Hugging Face ``allenai/c4``/``en``, or local files in C4's layout) to MDS shards.

Two output modes, auto-detected by the loader (m2bert.data.mlm):

* raw text (default): one sample per document, column ``text`` (``str``); tokenised at load
  time, truncated/padded to ``max_seq_len`` — as MosaicML's original BERT recipe does;
* pre-tokenised (``--tokenizer T --concat-tokens L``): column ``tokens``
  (``ndarray:uint16:L`` or ``int32``), rows of exactly ``L`` ids: ``[CLS]`` followed by the
  next ``L-1`` ids of the stream ``doc1 [SEP] doc2 [SEP] …``. Nothing is padded except the very
  last row of a split, so no text is dropped.

Each split goes to ``<out-root>/<split>/`` (``train``, ``train_small``, ``val``, ``val_small``,
as in MosaicML's converter). It is written to a hidden ``.<split>.partial-*`` folder and renamed
only after ``index.json`` has been checked against the shards, so an interrupted run never
leaves a folder that looks complete. Local splits are renamed into place together, once every
requested split has converted: ``--force`` replaces all of them or none (never a new train
beside an old val).
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from m2bert import cli_help, object_store
from m2bert.data.held_out import is_held_out
from m2bert.object_store import is_remote

log = logging.getLogger(__name__)

HF_DATASET = "allenai/c4"
HF_CONFIG = "en"


@dataclass(frozen=True)
class SplitSpec:
    """One output split: which source split it reads and how many documents at most."""

    source_split: str  # "train" | "validation"
    max_docs: int | None


# As MosaicML's convert_dataset (examples/bert/src/convert_dataset.py): full splits and small ones.
SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec("train", None),
    "train_small": SplitSpec("train", 100_000),
    "val": SplitSpec("validation", None),
    "val_small": SplitSpec("validation", 10_000),
}
LOCAL_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")
CHUNK_LINES = 256


class C4InputError(ValueError):
    """Bad input; the message names the file and (where it applies) the line."""


@dataclass
class ConvertStats:
    """Counts for one split, returned in the JSON summary."""

    split: str
    documents: int = 0
    rows: int = 0
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    shards: int = 0
    seconds: float = 0.0
    path: str = ""


# ----------------------------------------------------------------------------- reading
def find_local_files(source: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Map source split → sorted C4 files under ``source`` (a file or a directory).

    Files whose name contains ``validation`` are the validation split (C4's
    ``c4-validation.*.json.gz``); every other file is train. A single file is train.
    """
    p = Path(source).expanduser()
    if not p.exists():
        raise C4InputError(f"input path {p} does not exist")
    if p.is_file():
        files = [p]
    else:
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(LOCAL_SUFFIXES))
        if not files:
            raise C4InputError(f"no C4 files ({', '.join('*' + s for s in LOCAL_SUFFIXES)}) under {p}")
    out: dict[str, list[Path]] = {"train": [], "validation": []}
    for f in files:
        out["validation" if "validation" in f.name else "train"].append(f)
    return out


def iter_file_lines(path: Path) -> Iterator[tuple[str, int, bytes]]:
    """Yield (file, line number, raw bytes) for non-blank lines; empty or unreadable files raise."""
    if not path.exists():
        raise C4InputError(f"input file {path} does not exist")
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    n = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    n += 1
                    yield str(path), lineno, line
    except (OSError, EOFError) as exc:
        raise C4InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if n == 0:
        raise C4InputError(f"input file {path} is empty (no JSON lines)")


def _iter_hf_lines(source_split: str) -> Iterator[tuple[str, int, Any]]:
    """Stream ``allenai/c4`` (``en``) from the Hugging Face hub; needs network. The hub is asked before any output
    (not inside the writer's progress bar): unreachable or offline, one line naming ``--source``."""
    import datasets

    try:
        ds = datasets.load_dataset(HF_DATASET, HF_CONFIG, split=source_split, streaming=True)
    except OSError as exc:  # ConnectionError: offline (HF_HUB_OFFLINE=1) or the hub unreachable
        raise C4InputError(f"could not stream {HF_DATASET} from the Hugging Face hub ({str(exc).strip()}); without "
                           f"network, convert local C4 json/json.gz files with --source DIR") from exc
    return ((f"{HF_DATASET}:{HF_CONFIG}/{source_split}", i, rec) for i, rec in enumerate(ds, 1))


class PlainText(bytes):
    """A plain-text document's raw bytes (a ``.txt`` file, paragraph or line): :func:`parse_line` decodes it as it
    is, where other bytes are a JSON line."""


def parse_line(file: str, lineno: int, raw: Any, text_field: str = "text") -> str:
    """Return the document text of one line (a JSON object's ``text_field``; a record of a dataset; or
    :class:`PlainText`), or raise C4InputError naming file, line and problem."""
    if isinstance(raw, dict):
        rec = raw
    else:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise C4InputError(f"{file} line {lineno}: undecodable bytes (not UTF-8): {exc}") from exc
        if isinstance(raw, PlainText):
            return line
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise C4InputError(f"{file} line {lineno}: not JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(rec, dict):
        raise C4InputError(f"{file} line {lineno}: not a JSON object (got {type(rec).__name__})")
    if text_field not in rec:
        raise C4InputError(f"{file} line {lineno}: record has no {text_field!r} field (keys: {sorted(rec)}); "
                           "name the text's field with --text-field")
    text = rec[text_field]
    if not isinstance(text, str):
        raise C4InputError(f"{file} line {lineno}: {text_field!r} is not a string (got {type(text).__name__})")
    return text


# ----------------------------------------------------------------------------- workers
_WORKER_TOKENIZER: Any = None


def _init_worker(tokenizer_name: str | None) -> None:
    global _WORKER_TOKENIZER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if tokenizer_name is not None:
        from m2bert.data.tokenizer import load_tokenizer

        _WORKER_TOKENIZER = load_tokenizer(tokenizer_name)


def _process_chunk(chunk: list[tuple[str, int, Any]], text_field: str = "text", held_out: tuple[int, bool] | None = None,
                   ) -> list[tuple[str, int, str | None, str | None, list[int] | None]]:
    """Parse (and tokenise) a chunk, keeping the documents of the split (``held_out``, see :class:`SplitInput`);
    errors are returned, not raised, so the parent decides in order."""
    out: list[tuple[str, int, str | None, str | None, list[int] | None]] = []
    for file, lineno, raw in chunk:
        try:
            text = parse_line(file, lineno, raw, text_field)
        except C4InputError as exc:
            out.append((file, lineno, None, str(exc), None))
            continue
        if held_out is None or is_held_out(text, held_out[0]) == held_out[1]:
            out.append((file, lineno, text, None, None))
    if _WORKER_TOKENIZER is not None:
        idx = [i for i, r in enumerate(out) if r[2] is not None]
        if idx:
            ids = _WORKER_TOKENIZER([out[i][2] for i in idx], add_special_tokens=False, verbose=False)["input_ids"]
            for i, toks in zip(idx, ids):
                f, ln, text, err, _ = out[i]
                out[i] = (f, ln, text, err, toks)
    return out


def _chunks(lines: Iterator[tuple[str, int, Any]], size: int) -> Iterator[list[tuple[str, int, Any]]]:
    buf: list[tuple[str, int, Any]] = []
    for item in lines:
        buf.append(item)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _error_kind(message: str) -> str:
    named_field = re.search(r"has no '[^']*'", message)
    if named_field:
        return named_field.group(0)
    for kind in ("undecodable bytes", "not JSON", "not a JSON object", "not a string", "is empty", "cannot read"):
        if kind in message:
            return kind
    return "other"


# ----------------------------------------------------------------------------- packing
class _Packer:
    """Packs token ids into rows of exactly ``length``: ``[CLS]`` + next ``length-1`` stream ids."""

    def __init__(self, length: int, cls_id: int | None, sep_id: int | None, pad_id: int) -> None:
        self.length, self.cls_id, self.sep_id, self.pad_id = length, cls_id, sep_id, pad_id
        self.body = length - (1 if cls_id is not None else 0)
        self.buf: list[int] = []

    def add(self, ids: list[int]) -> Iterator[list[int]]:
        self.buf.extend(ids)
        if self.sep_id is not None:
            self.buf.append(self.sep_id)
        while len(self.buf) >= self.body:
            yield self._row(self.buf[: self.body])
            del self.buf[: self.body]

    def flush(self) -> Iterator[list[int]]:
        if self.buf:
            row = self._row(self.buf)
            yield row + [self.pad_id] * (self.length - len(row))
            self.buf = []

    def _row(self, body: list[int]) -> list[int]:
        return ([self.cls_id] if self.cls_id is not None else []) + body


# ----------------------------------------------------------------------------- writing
def verify_index(folder: Path, expected_rows: int) -> int:
    """Check ``index.json`` lists shards that exist with the expected total; return the shard count."""
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise RuntimeError(f"conversion wrote no index.json in {folder}")
    index = json.loads(index_path.read_text())
    shards = index.get("shards", [])
    total = 0
    for shard in shards:
        data = shard.get("zip_data") or shard["raw_data"]
        f = folder / data["basename"]
        if not f.is_file():
            raise RuntimeError(f"index.json in {folder} lists {data['basename']}, which is missing")
        if f.stat().st_size != data["bytes"]:
            raise RuntimeError(f"{f}: {f.stat().st_size} bytes on disk, index.json says {data['bytes']}")
        total += int(shard["samples"])
    if total != expected_rows:
        raise RuntimeError(f"index.json in {folder} counts {total} samples; {expected_rows} were written")
    return len(shards)


def _split_is_nonempty(out_root: str, split: str) -> bool:
    if is_remote(out_root):  # also the reachability check: a wrong bucket or credentials stop here, in one line
        return bool(object_store.list_objects(object_store.join(out_root, split), "--out-root"))
    p = Path(out_root).expanduser() / split
    return p.exists() and (not p.is_dir() or any(p.iterdir()))


def _swap_in(converted: list[tuple[Path, Path]]) -> None:
    """Rename every converted split into place; the previous folders go only after all new ones are in."""
    old: list[tuple[Path, Path]] = []  # (final, the folder its previous contents were moved into)
    try:
        for tmp, final in converted:
            if final.exists():
                aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
                os.replace(final, aside / final.name)
                old.append((final, aside))
            os.replace(tmp, final)
    except BaseException:
        for final, aside in old:  # put the previous splits back: all or none
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(aside / final.name, final)
            shutil.rmtree(aside, ignore_errors=True)
        for tmp, _ in converted:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, aside in old:
        shutil.rmtree(aside, ignore_errors=True)


def convert(
    source: str = HF_DATASET,
    out_root: str = "c4-mds",
    *,
    splits: Sequence[str] = ("train", "train_small", "val", "val_small"),
    limit: int | None = None,
    **writing: Any,
) -> dict[str, Any]:
    """Convert ``source`` (``allenai/c4`` or local C4 files) into ``out_root/<split>/`` MDS shards.

    ``writing``: :func:`write_splits`' options (text_field, tokenizer, concat_tokens, compression, num_workers, force,
    skip_bad, size_limit, progress). Returns a JSON-able summary (per-split documents, rows, skipped lines,
    shards, docs/s). Raises :class:`C4InputError` on bad input (unless ``skip_bad``), ``FileExistsError`` if a
    split folder is non-empty and ``force`` is false.
    """
    for s in splits:
        if s not in SPLITS:
            raise ValueError(f"unknown split {s!r}; choose from {sorted(SPLITS)}")
    use_hf = source in (HF_DATASET, "c4", f"{HF_DATASET}:{HF_CONFIG}")
    local_files = None if use_hf else find_local_files(source)
    if local_files is not None:  # before converting anything: a split without files must not leave the others half-done
        for split in splits:
            if not local_files[SPLITS[split].source_split]:
                raise C4InputError(
                    f"split {split!r} reads C4's {SPLITS[split].source_split!r} files, but {source} has none "
                    f"(validation files have 'validation' in their name); choose other --splits")
    inputs: dict[str, SplitInput] = {}
    for split in splits:
        spec = SPLITS[split]
        max_docs = spec.max_docs if limit is None else min(spec.max_docs or limit, limit)
        lines = _iter_hf_lines(spec.source_split) if local_files is None else \
            (x for f in local_files[spec.source_split] for x in iter_file_lines(f))
        inputs[split] = SplitInput(lines, max_docs)
    return write_splits(str(source), out_root, inputs, **writing)


@dataclass
class SplitInput:
    """What one output split reads: ``lines`` (file or source, line number, raw record), at most ``max_docs``
    documents of them, and which documents it keeps: all, or (``held_out=(every, True)``) the ones
    :func:`m2bert.data.held_out.is_held_out` holds out, or (``(every, False)``) the others."""

    lines: Iterator[tuple[str, int, Any]]
    max_docs: int | None = None
    held_out: tuple[int, bool] | None = None


def write_splits(
    source: str,
    out_root: str,
    inputs: dict[str, SplitInput],
    *,
    text_field: str = "text",
    tokenizer: str | None = None,
    concat_tokens: int | None = None,
    compression: str | None = "zstd",
    num_workers: int = 0,
    force: bool = False,
    skip_bad: bool = False,
    size_limit: int | str = 1 << 26,
    progress: bool = True,
) -> dict[str, Any]:
    """Write each of ``inputs`` into ``out_root/<split>/`` as MDS shards (raw text, or rows of ``concat_tokens``
    ids), each split into a hidden partial folder first and all of them renamed into place together once every
    one has converted and its ``index.json`` matches its shards. ``source`` names the input in the summary."""
    global _WORKER_TOKENIZER
    from streaming import MDSWriter
    from tqdm.auto import tqdm

    from m2bert.data.shards import HASH_ALGOS

    if (tokenizer is None) != (concat_tokens is None):
        raise ValueError("pre-tokenised mode needs both --tokenizer and --concat-tokens")
    if concat_tokens is not None and concat_tokens < 2:
        raise ValueError(f"--concat-tokens must be >= 2, got {concat_tokens}")
    for s in inputs:
        if _split_is_nonempty(out_root, s) and not force:
            shown = object_store.join(out_root, s) if is_remote(out_root) else Path(out_root) / s
            raise FileExistsError(f"{shown} exists and is not empty; pass --force to overwrite it")

    tok = None
    columns: dict[str, str]
    if tokenizer is not None:
        from m2bert.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)
        dtype = "uint16" if len(tok) <= 65535 else "int32"
        columns = {"tokens": f"ndarray:{dtype}:{concat_tokens}"}
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (sep_id if sep_id is not None else 0)
    else:
        columns = {"text": "str"}

    import numpy as np

    summary: dict[str, Any] = {"source": source, "out_root": str(out_root), "mode": "tokens" if tok else "text",
                               "tokenizer": tokenizer, "concat_tokens": concat_tokens, "splits": {}}
    remote = is_remote(out_root)
    converted: list[tuple[Path, Path]] = []  # local splits' (temporary folder, final folder), swapped in together
    for split, spec in inputs.items():
        max_docs = spec.max_docs
        stats = ConvertStats(split=split)
        if remote:  # converted locally, uploaded once verified (see the upload below)
            tmp_parent = Path(tempfile.mkdtemp(prefix="m2bert-c4-"))
            tmp = tmp_parent / split
            final_remote = object_store.join(out_root, split)
            out: Any = str(tmp)
        else:
            root = Path(out_root).expanduser()
            root.mkdir(parents=True, exist_ok=True)
            tmp_parent = None
            tmp = Path(tempfile.mkdtemp(prefix=f".{split}.partial-", dir=root))
            out = str(tmp)
        t0 = time.perf_counter()
        pool = None
        try:
            # Hashes let readers check the shards (data.validate_hash=auto checks xxh64, the cheaper one).
            writer = MDSWriter(columns=columns, out=out, compression=compression, size_limit=size_limit,
                               keep_local=True, hashes=sorted(HASH_ALGOS))
            packer = _Packer(concat_tokens, cls_id, sep_id, pad_id) if tok is not None else None  # type: ignore[arg-type]
            bar = tqdm(total=max_docs, unit="doc", desc=f"{split}", disable=not progress, mininterval=1.0)

            def emit(ids: list[int]) -> None:
                writer.write({"tokens": np.asarray(ids, dtype=columns["tokens"].split(":")[1])})
                stats.rows += 1

            chunks = _chunks(spec.lines, CHUNK_LINES)
            process = partial(_process_chunk, text_field=text_field, held_out=spec.held_out)
            tok_name = tokenizer if tok is not None else None
            if num_workers > 0:
                pool = get_context("spawn").Pool(num_workers, initializer=_init_worker, initargs=(tok_name,))
                results: Any = pool.imap(process, chunks)
            else:
                _WORKER_TOKENIZER = tok
                results = map(process, chunks)
            done = False
            for chunk_result in results:
                for file, lineno, text, err, ids in chunk_result:
                    if err is not None:
                        if not skip_bad:
                            raise C4InputError(err)
                        kind = _error_kind(err)
                        stats.skipped += 1
                        stats.skipped_reasons[kind] = stats.skipped_reasons.get(kind, 0) + 1
                        log.warning("skipping: %s", err)
                        continue
                    stats.documents += 1
                    bar.update(1)
                    if packer is None:
                        writer.write({"text": text})
                        stats.rows += 1
                    else:
                        for row in packer.add(ids):  # type: ignore[arg-type]
                            emit(row)
                    if max_docs is not None and stats.documents >= max_docs:
                        done = True
                        break
                if done:
                    break
            if packer is not None:
                for row in packer.flush():
                    emit(row)
            bar.close()
            if stats.documents == 0:
                raise C4InputError(f"no documents read from {source} for split {split!r}")
            writer.finish()
            stats.shards = verify_index(tmp, stats.rows)
            stats.seconds = time.perf_counter() - t0
            if remote:
                # index.json goes up last, after every shard it lists: a reader never sees a listed shard missing.
                # (MDSWriter's own (local, remote) form uploads the index once its queue is empty, which can be
                # while the last shard's upload is still in flight.)
                if force:  # the old index goes first: meanwhile readers find no dataset, never a mix of two
                    object_store.delete(final_remote, ["index.json"], "--out-root")
                object_store.upload_folder(tmp, final_remote, "--out-root", last="index.json")
                stats.path = final_remote
            else:
                final = Path(out_root).expanduser() / split
                converted.append((tmp, final))  # renamed into place once every split has converted
                stats.path = str(final)
        except BaseException:
            for done, _ in converted:  # all or none: the splits converted so far are dropped too
                shutil.rmtree(done, ignore_errors=True)
            raise
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            _WORKER_TOKENIZER = None  # the in-process tokenizer is only for this call
            if tmp.exists() and not any(tmp == done for done, _ in converted):
                shutil.rmtree(tmp, ignore_errors=True)
            if tmp_parent is not None:
                shutil.rmtree(tmp_parent, ignore_errors=True)
        rate = stats.documents / stats.seconds if stats.seconds > 0 else 0.0
        log.info("%s: %d documents → %d rows in %d shards (%.0f docs/s), %d lines skipped → %s", split,
                 stats.documents, stats.rows, stats.shards, rate, stats.skipped, stats.path)
        stats.seconds = round(stats.seconds, 3)
        summary["splits"][split] = {**stats.__dict__, "docs_per_s": round(rate, 1)}
    _swap_in(converted)
    return summary


def add_writing_args(ap: argparse.ArgumentParser) -> None:
    """The options of :func:`write_splits` (output, tokenisation, workers, overwrite), shared by the converters."""
    ap.add_argument("--out-root", required=True, help="output root: a local folder or a remote URL (s3://…)")
    ap.add_argument("--text-field", default="text", help="the field of a JSON line (or dataset record) that holds the text")
    ap.add_argument("--tokenizer", default=None, help="pre-tokenise with this tokenizer (HF id or directory) (default: none, raw text)")
    ap.add_argument("--concat-tokens", type=int, default=None, help="row length in tokens for pre-tokenised mode, e.g. 128 (default: raw text)")
    ap.add_argument("--compression", default="zstd", help="shard compression ('none' for none)")
    ap.add_argument("--num-workers", type=int, default=0, help="parse/tokenise in this many processes (0: in this one)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many documents per split, for smoke runs (default: all)")
    ap.add_argument("--force", action="store_true", help="overwrite non-empty split folders")
    ap.add_argument("--skip-bad", action="store_true", help="skip and count bad lines instead of stopping")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")


def writing_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`add_writing_args`' values as :func:`write_splits`' keyword arguments (``--limit`` aside)."""
    return {"text_field": args.text_field, "tokenizer": args.tokenizer, "concat_tokens": args.concat_tokens,
            "compression": None if args.compression.lower() == "none" else args.compression,
            "num_workers": args.num_workers, "force": args.force, "skip_bad": args.skip_bad,
            "progress": not args.no_progress}


def run_cli(prog: str, convert_call: Callable[[], dict[str, Any]]) -> int:
    """A converter's end: the JSON summary on stdout and 0, or bad input as one line on stderr and 2."""
    try:
        summary = convert_call()
    except (C4InputError, OSError, ValueError) as exc:  # OSError: a tokenizer the hub cannot give (offline)
        sys.stderr.write(f"{prog}: error: {(str(exc).strip() or type(exc).__name__).splitlines()[0]}\n")
        return 2
    print(json.dumps(summary, indent=2))  # the summary is the command's output
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``m2bert-convert-c4``; ``python data_prep/convert_c4.py`` in a checkout); prints JSON."""
    ap = cli_help.ArgumentParser(__doc__)
    ap.add_argument("--source", default=HF_DATASET,
                    help=f"'{HF_DATASET}' (streamed from the hub, needs network) or a local C4 file/directory")
    ap.add_argument("--splits", nargs="+", default=["train", "train_small", "val", "val_small"],
                    choices=sorted(SPLITS), help="splits to convert, each into its own folder")
    add_writing_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_cli("m2bert-convert-c4", lambda: convert(args.source, args.out_root, splits=args.splits,
                                                        limit=args.limit, **writing_options(args)))


if __name__ == "__main__":
    raise SystemExit(main())
