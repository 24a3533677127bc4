"""Tokenizers: load one by Hugging Face id or local path, or train a BERT-style WordPiece offline.

A trained tokenizer uses BERT's special tokens *and ids* ([PAD]=0, [unused0..98]=1..99,
[UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103), so code and configs written for
``bert-base-uncased`` work unchanged with it; only the vocabulary size differs.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from m2bert import cli_help
from m2bert.atomic import atomic_directory

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NUM_UNUSED = 99  # [unused0]..[unused98] occupy ids 1..99, as in BERT's vocab.txt
BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}

PICKLE_SUFFIXES = (".pkl", ".pickle")  # e.g. TransfoXL's vocab.pkl, which its tokenizer unpickles
_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


def _looks_like_path(name: str) -> bool:
    """A Hugging Face id is ``name`` or ``org/name``; anything else we treat as a local path."""
    return name.startswith(_PATH_PREFIXES) or os.path.isabs(name) or name.count("/") > 1 or name.endswith(".txt")


def load_tokenizer(name_or_dir: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory, a BERT ``vocab.txt`` file, or a Hugging Face id.

    Local paths win over hub ids, so an offline machine never reaches for the network when the
    directory exists; a path that does not exist fails fast with its name in the message.
    """
    from transformers import AutoTokenizer, BertTokenizerFast  # here: the CLIs parse arguments before it loads

    name = os.fspath(name_or_dir)
    path = Path(name).expanduser()
    if path.is_file():
        if path.name.endswith(".txt"):  # a bare BERT vocab file
            return BertTokenizerFast(vocab_file=str(path), do_lower_case=True)
        raise ValueError(f"tokenizer path {path} is a file; expected a tokenizer directory or a vocab.txt")
    if path.is_dir():
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise ValueError(f"tokenizer directory {path} holds {pickled[0]}, a pickled vocabulary (TransfoXL's format) "
                             f"that transformers would unpickle, which can run code; m2bert never loads pickled "
                             f"tokenizers: use a tokenizer.json or vocab.txt tokenizer")
        try:
            return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)  # no code from the folder
        except Exception as exc:  # noqa: BLE001 - re-raised with the path named
            raise ValueError(f"could not load a tokenizer from directory {path}: {exc}") from exc
    if _looks_like_path(name):
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001
        raise OSError(
            f"could not load tokenizer {name!r}: no local directory of that name exists and the Hugging Face "
            f"hub could not provide it ({type(exc).__name__}: {(str(exc).strip() or '-').splitlines()[0]}). Offline, "
            f"train one with m2bert-train-tokenizer (--out DIR) and pass that directory."
        ) from exc


def load_configured_tokenizer(key: str, name_or_dir: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """:func:`load_tokenizer` for a config key (``data.tokenizer``, ``start.tokenizer``): a tokenizer that cannot be
    had (offline hub id, missing or broken folder) is one ConfigError naming the key, not a traceback."""
    from m2bert.options import ConfigError

    try:
        return load_tokenizer(name_or_dir)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from e


def set_model_max_length(folder: str | os.PathLike[str], length: int) -> None:
    """Write ``length`` (the model's longest input) as ``model_max_length`` into the tokenizer saved in ``folder``.

    Why: a tokenizer made from a vocab.txt (or bert-base-uncased's own) says 1e30, so ``truncation=True`` passes
    inputs the model saved beside it then refuses. Edits the saved file, not a tokenizer object: callers share
    theirs (GLUE caches one per path)."""
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["model_max_length"] = int(length)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def iter_corpus_texts(files: Sequence[str | os.PathLike[str]]) -> Iterator[str]:
    """Texts of a corpus: the ``text`` field of JSON-lines files (C4 layout), else plain-text lines."""
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"corpus file {p} does not exist")
        is_json = any(p.name.endswith(s) for s in (".json", ".jsonl", ".json.gz", ".jsonl.gz"))
        opener = gzip.open if p.name.endswith(".gz") else open
        n = 0
        lineno = 0
        try:
            with opener(p, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    if is_json:
                        try:
                            text = json.loads(line)["text"]
                        except (json.JSONDecodeError, KeyError, TypeError) as exc:
                            raise ValueError(f"{p} line {lineno}: expected a JSON object with a 'text' field "
                                             f"({type(exc).__name__}: {exc})") from exc
                        if not isinstance(text, str):
                            raise ValueError(f"{p} line {lineno}: 'text' is a {type(text).__name__}, not a string")
                    else:
                        text = line.rstrip("\n")
                    n += 1
                    yield text
        except (UnicodeDecodeError, OSError, EOFError) as exc:  # binary, bad gzip, truncated gzip
            raise ValueError(f"{p} line {lineno + 1}: not UTF-8 text{' (gzip)' if opener is gzip.open else ''} "
                             f"({type(exc).__name__}: {exc})") from exc
        if n == 0:
            raise ValueError(f"{p} holds no text (empty, or only blank lines)")


def train_wordpiece(
    files: Sequence[str | os.PathLike[str]] | Iterable[str],
    out_dir: str | os.PathLike[str],
    vocab_size: int = 30522,
    *,
    min_frequency: int = 2,
    texts: Iterable[str] | None = None,
) -> Path:
    """Train an uncased WordPiece tokenizer with BERT's special ids; save a BertTokenizerFast dir.

    ``files`` are corpus files (JSON lines with ``text``, or plain text); alternatively pass
    ``texts`` directly (then ``files`` may be empty). The directory is written atomically.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    n_reserved = len(SPECIAL_TOKENS) + NUM_UNUSED
    if vocab_size <= n_reserved + 100:
        raise ValueError(f"vocab_size must be > {n_reserved + 100}, got {vocab_size}")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size - NUM_UNUSED,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    source = texts if texts is not None else iter_corpus_texts(list(files))  # type: ignore[arg-type]
    tok.train_from_iterator(source, trainer=trainer)

    learned = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if t not in SPECIAL_TOKENS]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(NUM_UNUSED)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + learned
    vocab = vocab[:vocab_size]

    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        (tmp / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
        fast = BertTokenizerFast(vocab_file=str(tmp / "vocab.txt"), do_lower_case=True)
        fast.save_pretrained(str(tmp))
        for token, want in BERT_SPECIAL_IDS.items():
            got = fast.convert_tokens_to_ids(token)
            if got != want:  # pragma: no cover - guards the construction above
                raise AssertionError(f"{token} got id {got}, expected {want}")
    log.info("trained WordPiece tokenizer: %d tokens → %s", len(vocab), out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``train_tokenizer.py --out DIR [--vocab-size N] FILE...``; prints a JSON summary."""
    ap = cli_help.ArgumentParser(__doc__)
    ap.add_argument("files", nargs="+", help="corpus files: C4-style JSON lines (.json/.jsonl/.json.gz) or text")
    ap.add_argument("--out", required=True, help="output tokenizer directory (BertTokenizerFast layout)")
    ap.add_argument("--vocab-size", type=int, default=30522, help="vocabulary size in tokens, special tokens included")
    ap.add_argument("--min-frequency", type=int, default=2, help="merges seen fewer times than this are not learnt")
    ap.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        ap.error(f"{out} exists and is not empty; pass --force to overwrite")
    try:
        path = train_wordpiece(args.files, out, args.vocab_size, min_frequency=args.min_frequency)
    except (FileNotFoundError, ValueError) as e:  # bad input: one line naming the file, exit 2
        sys.stderr.write(f"m2bert-train-tokenizer: error: {str(e).splitlines()[0]}\n")
        raise SystemExit(2) from e
    tok = load_tokenizer(path)
    print(json.dumps({"out": str(path), "vocab_size": len(tok)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
