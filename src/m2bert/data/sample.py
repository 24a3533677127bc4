"""The offline sample: an English corpus in C4's layout plus two GLUE-style tasks, built from docstrings.

Every machine that runs this project has Python's standard library and the pinned packages;
their docstrings are real English prose written by people. We read them with ``ast`` (nothing is
imported or executed), strip code, doctests and reST/Markdown markup, keep prose paragraphs,
and write:

* ``c4/en/c4-train.00000-of-00001.json`` and ``c4/en/c4-validation.00000-of-00001.json``:
  one JSON object per line with ``text``, ``timestamp``, ``url`` (C4's layout); one document per
  module; about 1 in 20 modules goes to validation;
* ``glue/SAMPLE-SS/{train,dev}.tsv``: single sentence, ``original`` (1) vs. ``shuffled`` (0,
  its words shuffled) — a CoLA-like acceptability task;
* ``glue/SAMPLE-PAIR/{train,dev}.tsv``: sentence pair, ``same`` (1, consecutive sentences of
  one module's docstrings) vs. ``different`` (0, from modules of another package) — MRPC-like;
* ``manifest.json``: sizes and SHA-256s.

The output is byte-identical across runs on one installation: sorted file lists, fixed seeds,
fixed timestamps. Dev-set sentences come from modules disjoint from the train modules.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import random
import re
import sys
import sysconfig
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2bert import cli_help
from m2bert.atomic import atomic_directory

log = logging.getLogger(__name__)

TIMESTAMP = "2019-04-25T12:57:54Z"  # C4's timestamp format; fixed so the output is deterministic
MIN_WORDS = 250_000
TARGET_WORDS = 300_000
# After the standard library, docstrings of pinned packages (in this order) until TARGET_WORDS.
PACKAGES = ("streaming", "composer", "datasets", "huggingface_hub", "matplotlib", "numpy", "transformers", "torch")
SKIP_PARTS = {"test", "tests", "idle_test", "testing", "_vendor", "vendored", "site-packages", "dist-packages",
              "lib2to3", "turtledemo", "idlelib", "__pycache__", "ensurepip", "_distutils_hack", "pydoc_data",
              "encodings", "_pyrepl", "third_party", "benchmarks", "examples"}
SEED = 20231211
SS_SIZES = {"train": 4000, "dev": 600}
PAIR_SIZES = {"train": 4000, "dev": 600}
VAL_EVERY = 20  # 1 module in VAL_EVERY goes to validation / dev (by a stable hash of its name)


@dataclass(frozen=True)
class Doc:
    """One module's cleaned docstrings: the family (top-level package) and prose paragraphs."""

    family: str
    module: str
    origin: str  # "stdlib" or the package name
    paragraphs: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.paragraphs)

    @property
    def words(self) -> int:
        return sum(len(p.split()) for p in self.paragraphs)


# ----------------------------------------------------------------------------- extraction
def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _package_root(name: str) -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _py_files(root: Path, base: Path) -> list[tuple[str, Path]]:
    """(dotted module name, path) of .py files under root, sorted, skipping tests and vendored code."""
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(base)
        if any(part in SKIP_PARTS or part.startswith(("test_", ".")) for part in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts or parts[-1].startswith("test"):
            continue
        out.append((".".join(parts), p))
    return sorted(out)


def _docstrings(path: Path) -> list[str]:
    """Module, class and function docstrings of a source file, in source order, without importing it."""
    try:
        src = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(src)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    out: list[str] = []
    defs = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)

    def visit(node: ast.AST) -> None:  # statements only: ast.walk would also visit every expression
        if isinstance(node, (ast.Module, *defs)):
            d = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
            if d:
                out.append(d)
        for name in ("body", "orelse", "finalbody", "handlers"):
            for child in getattr(node, name, ()):
                if isinstance(child, (ast.stmt, ast.excepthandler)):
                    visit(child)

    visit(tree)
    return out


_ROLE = re.compile(r":[\w:.+-]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")  # :func:`name` / :ref:`text <target>`
_LITERAL = re.compile(r"``([^`]*)``")
_BACKTICK = re.compile(r"`([^`]*)`_{0,2}")
_EMPH = re.compile(r"(?<![\w*])\*{1,2}([^*\n]+?)\*{1,2}(?![\w*])")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")  # Markdown links
_URL = re.compile(r"<?https?://\S+>?")
_WORD = re.compile(r"^[(\"']{0,2}[A-Za-z][A-Za-z'-]*[.,;:!?)\"']{0,3}$")
_CALL = re.compile(r"(\w)\(\)")
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _strip_markup(text: str) -> str:
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _BACKTICK.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    text = _URL.sub("", text)
    text = _CALL.sub(r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def _is_prose(par: str) -> bool:
    """A paragraph of English prose: several words, mostly plain words, sentence punctuation."""
    words = par.split()
    if len(words) < 6:
        return False
    plain = sum(1 for w in words if _WORD.match(w))
    if plain / len(words) < 0.8:
        return False
    if not (par[0].isalpha() or par[0] in "\"'") or par[-1] not in ".!?:":
        return False
    return not any(s in par for s in ("{", "}", "==", "->", "=>", "()", "[]", "\\", "$", "|", ">>>", "__", " -- "))


def clean_docstring(doc: str) -> list[str]:
    """Prose paragraphs of a docstring: drop code blocks, doctests, field lists, headings, directives."""
    paragraphs: list[str] = []
    cur: list[str] = []
    in_block = False  # inside an indented literal block (after "::") or a directive body
    block_indent = 0

    def flush() -> None:
        if cur:
            par = _strip_markup(" ".join(cur))
            if _is_prose(par):
                paragraphs.append(par)
            cur.clear()

    indent = 0
    for line in doc.splitlines():
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        ind = len(line) - len(line.lstrip())
        if in_block:
            if ind > block_indent:
                continue
            in_block = False
        if ind != indent:  # a change of indentation starts a new paragraph (field bodies, lists)
            flush()
            indent = ind
        if stripped.startswith((">>>", "...", ".. ", "```", "$ ", "#")) or re.fullmatch(r"[=\-~^*+#`'\"_.]{3,}", stripped):
            flush()
            in_block, block_indent = stripped.startswith((".. ", "```")), ind
            continue
        if re.match(r"^:\w[^:]*:", stripped) or re.match(r"^(Args|Arguments|Returns?|Raises|Yields?|Parameters|"
                                                         r"Examples?|Notes?|Attributes|See Also|Warnings?|Todo|"
                                                         r"Example usage|Usage)\s*:?\s*$", stripped):
            flush()
            continue
        cur.append(stripped)
        if stripped.endswith("::"):
            cur[-1] = stripped[:-1]  # "like this::" introduces a literal block and reads "like this:"
            flush()
            in_block, block_indent = True, ind
    flush()
    return paragraphs


def collect_docs(target_words: int = TARGET_WORDS, packages: Sequence[str] = PACKAGES) -> list[Doc]:
    """Cleaned module documents: the whole standard library, then packages until ``target_words``."""
    docs: list[Doc] = []
    seen: set[str] = set()
    total = 0

    def add(modules: list[tuple[str, Path]], origin: str, stop_at_target: bool) -> None:
        nonlocal total
        for module, path in modules:
            if stop_at_target and total >= target_words:
                return
            paras: list[str] = []
            for d in _docstrings(path):
                for p in clean_docstring(d):
                    if p not in seen:  # inherited/copied docstrings would repeat
                        seen.add(p)
                        paras.append(p)
            if sum(len(p.split()) for p in paras) >= 20:
                doc = Doc(module.split(".")[0], module, origin, tuple(paras))
                docs.append(doc)
                total += doc.words

    std = _stdlib_root()
    add(_py_files(std, std), "stdlib", stop_at_target=False)
    log.info("standard library (Python %d.%d): %d modules, %d words", *sys.version_info[:2], len(docs), total)
    for name in packages:
        if total >= target_words:
            break
        root = _package_root(name)
        if root is None:
            log.info("package %s not installed; skipped", name)
            continue
        add(_py_files(root, root.parent), name, stop_at_target=True)
        log.info("after %s: %d modules, %d words", name, len(docs), total)
    return docs


# ----------------------------------------------------------------------------- derived tasks
def _is_dev(module: str) -> bool:
    return int(hashlib.sha256(module.encode()).hexdigest(), 16) % VAL_EVERY == 0


def _sentences(doc: Doc) -> list[str]:
    out = []
    for p in doc.paragraphs:
        for s in _SENT_SPLIT.split(p):
            n = len(s.split())
            if 6 <= n <= 40 and s[0].isupper() and s[-1] == "." and "\t" not in s:
                out.append(s)
    return out


def _shuffle_words(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    for _ in range(10):
        perm = words[:]
        rng.shuffle(perm)
        if perm != words:
            return " ".join(perm)
    return " ".join(reversed(words))


def make_ss_task(docs: list[Doc], sizes: dict[str, int] = SS_SIZES, seed: int = SEED) -> dict[str, list[tuple]]:
    """SAMPLE-SS rows (sentence, label): half original sentences (1), half word-shuffled ones (0)."""
    rng = random.Random(seed)
    out: dict[str, list[tuple]] = {}
    dev_sentences = {s for d in docs if _is_dev(d.module) for s in _sentences(d)}
    for split, n in sizes.items():
        pool = [s for d in docs if _is_dev(d.module) == (split == "dev") for s in _sentences(d)]
        pool = sorted(set(pool) if split == "dev" else set(pool) - dev_sentences)
        rng.shuffle(pool)
        chosen = pool[:n]
        rows = [(s, 1) if i % 2 == 0 else (_shuffle_words(s, rng), 0) for i, s in enumerate(chosen)]
        rng.shuffle(rows)
        out[split] = rows
    return out


def make_pair_task(docs: list[Doc], sizes: dict[str, int] = PAIR_SIZES, seed: int = SEED + 1
                   ) -> dict[str, list[tuple]]:
    """SAMPLE-PAIR rows (s1, s2, label): consecutive sentences of one module (1), or from two families (0)."""
    rng = random.Random(seed)
    out: dict[str, list[tuple]] = {}
    dev_sentences = {s for d in docs if _is_dev(d.module) for s in _sentences(d)}
    for split, n in sizes.items():
        per_doc = [(d, _sentences(d) if split == "dev" else [s for s in _sentences(d) if s not in dev_sentences])
                   for d in docs if _is_dev(d.module) == (split == "dev")]
        per_doc = [(d, s) for d, s in per_doc if len(s) >= 2]
        rows: list[tuple] = []
        seen: set[tuple[str, str]] = set()
        tries = 0
        while len(rows) < n and tries < 50 * n:
            tries += 1
            d, sents = per_doc[rng.randrange(len(per_doc))]
            if len(rows) % 2 == 0:
                i = rng.randrange(len(sents) - 1)  # neighbours: same docstring, same topic
                a, b, label = sents[i], sents[i + 1], 1
            else:
                d2, sents2 = per_doc[rng.randrange(len(per_doc))]
                if d2.family == d.family:
                    continue
                a, b, label = rng.choice(sents), rng.choice(sents2), 0
            if (a, b) in seen:
                continue
            seen.add((a, b))
            rows.append((a, b, label))
        rng.shuffle(rows)
        out[split] = rows
    return out


# ----------------------------------------------------------------------------- writing
def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def _url(doc: Doc) -> str:
    if doc.origin == "stdlib":
        return f"https://docs.python.org/{sys.version_info[0]}.{sys.version_info[1]}/library/{doc.family}.html#{doc.module}"
    return f"https://pypi.org/project/{doc.origin}/#{doc.module}"


def make_sample(out_dir: str | os.PathLike[str], *, target_words: int = TARGET_WORDS, force: bool = False
                ) -> dict[str, Any]:
    """Write the sample under ``out_dir`` (atomically) and return its manifest.

    Raises RuntimeError if fewer than MIN_WORDS words of prose could be gathered.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to overwrite it")
    docs = collect_docs(target_words)
    total = sum(d.words for d in docs)
    if total < MIN_WORDS:
        raise RuntimeError(f"only {total} words of docstring prose found (need {MIN_WORDS}); "
                           f"install the pinned packages ({', '.join(PACKAGES)})")
    train_docs = [d for d in docs if not _is_dev(d.module)]
    val_docs = [d for d in docs if _is_dev(d.module)]

    with atomic_directory(out) as tmp:
        files: dict[str, str] = {}
        for name, subset in (("train", train_docs), ("validation", val_docs)):
            lines = [json.dumps({"text": d.text, "timestamp": TIMESTAMP, "url": _url(d)}, ensure_ascii=False,
                                separators=(",", ":"))
                     for d in subset]
            files[f"c4/en/c4-{name}.00000-of-00001.json"] = "".join(ln + "\n" for ln in lines)
        ss, pair = make_ss_task(docs), make_pair_task(docs)
        for split, rows in ss.items():
            files[f"glue/SAMPLE-SS/{split}.tsv"] = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows)
        for split, rows in pair.items():
            files[f"glue/SAMPLE-PAIR/{split}.tsv"] = "index\tsentence1\tsentence2\tlabel\n" + "".join(
                f"{i}\t{a}\t{b}\t{y}\n" for i, (a, b, y) in enumerate(rows))
        for rel, text in files.items():
            _write_text(tmp / rel, text)
        manifest = {
            "description": "m2bert offline sample: docstring prose of the Python standard library and pinned "
                           "packages, in C4's JSON-lines layout, plus SAMPLE-SS and SAMPLE-PAIR in GLUE's TSV layout",
            "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
            "words": total,
            "documents": {"train": len(train_docs), "validation": len(val_docs)},
            "words_by_origin": {o: sum(d.words for d in docs if d.origin == o)
                                for o in dict.fromkeys(d.origin for d in docs)},
            "tasks": {"SAMPLE-SS": {k: len(v) for k, v in ss.items()},
                      "SAMPLE-PAIR": {k: len(v) for k, v in pair.items()}},
            "files": {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in sorted(files.items())},
        }
        _write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info("sample: %d words in %d documents → %s", total, len(docs), out)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``make_sample.py --out DIR [--force]``; prints the manifest as JSON."""
    ap = cli_help.ArgumentParser(__doc__)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--words", type=int, default=TARGET_WORDS, help="gather at least this many words")
    ap.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        manifest = make_sample(args.out, target_words=args.words, force=args.force)
    except (FileExistsError, RuntimeError) as exc:
        log.error("error: %s", exc)
        return 2
    print(json.dumps(manifest, indent=2, sort_keys=True))
    return 0

