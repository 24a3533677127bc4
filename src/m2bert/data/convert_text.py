"""Convert your own text to MDS shards for pretraining: plain-text files, JSON lines, or a ``datasets`` dataset.

Input (--source, files or folders, searched recursively):

* ``*.txt`` (or ``*.txt.gz``): plain UTF-8 text; each file is one document, or each paragraph (text between
  blank lines) or each line with --txt-unit paragraph|line;
* ``*.jsonl`` / ``*.json`` (or ``.gz``): one JSON object per line, the document in its "text" field (--text-field
  names another).

Or --dataset: a Hugging Face ``datasets`` dataset, a folder written by ``save_to_disk`` or a folder of data files
(parquet, csv, json) that ``load_dataset`` reads, or a hub name (streamed; needs network), with --text-field.

Output: ``<out-root>/train`` and ``<out-root>/val``, what m2bert-pretrain reads (data.local=<out-root>), written as
m2bert-convert-c4 writes (raw text, or rows of --concat-tokens ids with --tokenizer; atomically, both splits or
neither). The held-out split is --val-source's files (a dataset's "validation" split), or else one document in
--held-out-every, chosen by a hash of its text (deterministic); --held-out-every 0 writes train only (then pretrain
with data.eval_split=null).
"""
from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from m2bert import cli_help
from m2bert.data.convert_c4 import (
    C4InputError,
    PlainText,
    SplitInput,
    iter_file_lines,
    add_writing_args,
    run_cli,
    write_splits,
    writing_options,
)
from m2bert.data.held_out import HELD_OUT_EVERY

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".txt.gz")
JSON_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")
TXT_UNITS = ("file", "paragraph", "line")
VAL_SPLITS = ("validation", "val", "valid")  # a dataset's held-out split, the first of these it has
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")  # a folder written by save_to_disk


def find_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The text and JSON-lines files of ``paths`` (files, or folders searched recursively, hidden names skipped),
    each folder's in sorted order."""
    files: list[Path] = []
    for path in paths:
        p = Path(path).expanduser()
        if not p.exists():
            raise C4InputError(f"input path {p} does not exist")
        if p.is_file():
            if not p.name.endswith(TEXT_SUFFIXES + JSON_SUFFIXES):
                raise C4InputError(f"{p}: not a text or JSON-lines file (*.txt, *.jsonl, *.json, or .gz of them)")
            files.append(p)
            continue
        found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(TEXT_SUFFIXES + JSON_SUFFIXES)
                       and not any(part.startswith(".") for part in f.relative_to(p).parts))
        if not found:
            raise C4InputError(f"no text files (*.txt, *.jsonl, *.json, or .gz of them) under {p}")
        files += found
    return files


def _iter_text_units(path: Path, unit: str) -> Iterator[tuple[str, int, Any]]:
    """(file, first line number, :class:`PlainText`) for each document of a plain-text file: the whole file, each
    paragraph (between blank lines) or each line; blank documents are skipped, an empty file is an error."""
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise C4InputError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if not data.strip():
        raise C4InputError(f"input file {path} is empty (no text)")
    if unit == "file":
        yield str(path), 1, PlainText(data.strip())
        return
    paragraph: list[bytes] = []
    start = 1
    for lineno, line in enumerate(data.splitlines(), 1):
        if unit == "line":
            if line.strip():
                yield str(path), lineno, PlainText(line.strip())
        elif line.strip():
            start = start if paragraph else lineno
            paragraph.append(line)
        elif paragraph:
            yield str(path), start, PlainText(b"\n".join(paragraph).strip())
            paragraph = []
    if paragraph:
        yield str(path), start, PlainText(b"\n".join(paragraph).strip())


def iter_documents(files: Sequence[Path], txt_unit: str) -> Iterator[tuple[str, int, Any]]:
    """Every document of ``files``, in order, as the converter's (file, line, raw record)."""
    for f in files:
        yield from _iter_text_units(f, txt_unit) if f.name.endswith(TEXT_SUFFIXES) else iter_file_lines(f)


def load_dataset_splits(name: str, config: str | None) -> dict[str, Any]:
    """A ``datasets`` dataset's splits, each an iterable of records: a local folder (``save_to_disk``'s, or data
    files ``load_dataset`` reads), else a hub dataset, streamed (needs network). No dataset scripts run
    (``datasets`` 4 has none)."""
    import datasets

    path = Path(name).expanduser()
    if path.is_dir() and any((path / f).is_file() for f in SAVED_DATASET_FILES):
        loaded: Any = datasets.load_from_disk(str(path))
    elif path.exists():
        loaded = datasets.load_dataset(str(path), config)
    else:
        loaded = datasets.load_dataset(name, config, streaming=True)
    if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        return {"train": loaded}
    return dict(loaded)


def _records(label: str, rows: Any) -> Iterator[tuple[str, int, Any]]:
    for i, row in enumerate(rows, 1):
        yield label, i, dict(row)


def convert_text(
    sources: Sequence[str] = (),
    out_root: str = "text-mds",
    *,
    val_sources: Sequence[str] = (),
    dataset: str | None = None,
    dataset_config: str | None = None,
    train_split: str = "train",
    txt_unit: str = "file",
    held_out_every: int = HELD_OUT_EVERY,
    limit: int | None = None,
    **writing: Any,
) -> dict[str, Any]:
    """``sources`` (text / JSON-lines files or folders) or ``dataset`` into ``out_root/train`` and
    ``out_root/val`` (see the module's docstring). ``writing``: :func:`m2bert.data.convert_c4.write_splits`'
    options (text_field, tokenizer, concat_tokens, compression, num_workers, force, skip_bad, progress).
    Returns the JSON-able summary, with how the held-out split was made."""
    if bool(sources) == bool(dataset):
        raise ValueError("give --source (text or JSON-lines files and folders) or --dataset, one of them")
    if dataset and val_sources:
        raise ValueError("--val-source goes with --source; a dataset's held-out split is its 'validation' split")
    if txt_unit not in TXT_UNITS:
        raise ValueError(f"--txt-unit {txt_unit!r}; choose one of {', '.join(TXT_UNITS)}")
    if held_out_every < 0 or held_out_every == 1:
        raise ValueError(f"--held-out-every {held_out_every}: use N >= 2 (one document in N held out) or 0 (none)")
    if dataset is not None:
        splits = load_dataset_splits(dataset, dataset_config)
        if train_split not in splits:
            raise C4InputError(f"dataset {dataset} has no split {train_split!r} (it has {', '.join(splits)}); "
                               "name one with --dataset-split")
        val_name = next((s for s in VAL_SPLITS if s in splits and s != train_split), None)
        val = None if val_name is None else _records(f"{dataset}/{val_name}", splits[val_name])
        given = f"{dataset}/{val_name}"

        def documents() -> Iterator[tuple[str, int, Any]]:
            return _records(f"{dataset}/{train_split}", splits[train_split])
    else:
        files = find_files(sources)
        val = iter_documents(find_files(val_sources), txt_unit) if val_sources else None
        given = ", ".join(map(str, val_sources))

        def documents() -> Iterator[tuple[str, int, Any]]:
            return iter_documents(files, txt_unit)
    if val is not None:
        inputs = {"train": SplitInput(documents(), limit), "val": SplitInput(val, limit)}
        held_out = f"given: {given}"
    elif held_out_every:
        # Two passes over the source, each keeping its side of the hash (parsing is cheap; each document is
        # tokenised once, in the pass that keeps it).
        inputs = {"train": SplitInput(documents(), limit, (held_out_every, False)),
                  "val": SplitInput(documents(), limit, (held_out_every, True))}
        held_out = f"one document in {held_out_every}, by a hash of its text"
    else:
        inputs = {"train": SplitInput(documents(), limit)}
        held_out = "none (pretrain with data.eval_split=null)"
    summary = write_splits(dataset or ", ".join(map(str, sources)), out_root, inputs, **writing)
    summary["held_out"] = held_out
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``m2bert-convert-text``); prints the JSON summary."""
    ap = cli_help.ArgumentParser(__doc__)
    ap.add_argument("--source", nargs="+", default=[], help="text / JSON-lines files or folders (default: --dataset)")
    ap.add_argument("--val-source", nargs="+", default=[],
                    help="held-out files or folders (default: one document in --held-out-every of --source)")
    ap.add_argument("--dataset", default=None, help="a datasets dataset: a local folder or a hub name (default: --source)")
    ap.add_argument("--dataset-config", default=None, help="the dataset's configuration (default: none)")
    ap.add_argument("--dataset-split", default="train", help="the dataset's training split")
    ap.add_argument("--txt-unit", default="file", choices=TXT_UNITS, help="a document of a .txt file")
    ap.add_argument("--held-out-every", type=int, default=HELD_OUT_EVERY,
                    help="without a validation split, hold out one document in N by a hash of its text; 0: none")
    add_writing_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_cli("m2bert-convert-text", lambda: convert_text(
        args.source, args.out_root, val_sources=args.val_source, dataset=args.dataset,
        dataset_config=args.dataset_config, train_split=args.dataset_split, txt_unit=args.txt_unit,
        held_out_every=args.held_out_every, limit=args.limit, **writing_options(args)))


if __name__ == "__main__":
    raise SystemExit(main())
