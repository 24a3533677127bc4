"""An offline long-document retrieval set from WikiText-2 (real Wikipedia articles), in BEIR's layout.

Why: the original's long-context retrieval benchmark (LoCo) needs the hub; this set needs only the read-only
``shared`` folder and gives documents of very mixed length, which is what a padding-free, length-sorted
embedding pipeline has to handle.

- **Documents** are chunks of articles (`` = Title = `` headings in ``wikitext-2/{valid,test}.txt``): whole
  paragraphs (a section heading stays with the paragraph after it) packed greedily up to a target length drawn
  log-uniformly in ``[min_tokens, max_tokens]`` (bert-base-uncased WordPiece tokens), so the corpus runs from one
  paragraph to several thousand tokens. WikiText's tokenisation is undone (``@-@`` → ``-``, `` ,`` → ``,``;
  ``<unk>`` → ``[UNK]``).
- **Queries** are sentences *removed* from their document (the query text never remains in it), chosen by a
  hash of (seed, document, sentence), so the set is a function of its inputs: building it twice gives the
  same bytes.
- **Split**: documents are assigned to train or eval by a hash; eval queries search the *full* corpus; the
  train pairs (query, positive document) come only from train documents.

Files: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``),
``qrels/train.tsv`` and ``qrels/test.tsv`` (``query-id corpus-id score``), ``stats.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from m2bert import cli_help
from m2bert.atomic import atomic_directory

log = logging.getLogger(__name__)

SPLITS = ("valid", "test")
TITLE = re.compile(r"^ = ([^=].*) = $")
HEADING = re.compile(r"^ (?:= )+([^=].*?)(?: =)+ $")
# A WikiText sentence ends with a spaced " ." (abbreviations and decimals are "H." and "@.@").
SENTENCE_END = re.compile(r"(?<= [.!?]) (?=[A-Z0-9\"'(<])")
QUERY_WORDS = (8, 48)  # a query sentence's length in words: long enough to be specific, short enough to be a query


@dataclass
class Block:
    """A paragraph (a list of sentences), with the section heading that precedes it, if any."""

    sentences: list[str]
    heading: str | None = None

    def text(self) -> str:
        body = " ".join(self.sentences)
        return f"{self.heading}\n{body}" if self.heading else body


@dataclass
class Document:
    doc_id: str
    title: str
    blocks: list[Block]
    n_tokens: int = 0

    def text(self) -> str:
        return "\n\n".join(b.text() for b in self.blocks if b.sentences or b.heading)


@dataclass
class RetrievalSet:
    corpus: dict[str, Document]
    queries: dict[str, str]
    train_qrels: dict[str, str]   # query id -> its document id
    test_qrels: dict[str, str]
    stats: dict = field(default_factory=dict)

    def train_pairs(self) -> list[tuple[str, str]]:
        """(query, positive document text) for contrastive fine-tuning, in query-id order."""
        return [(self.queries[q], self.corpus[d].text()) for q, d in sorted(self.train_qrels.items())]


def detokenize(text: str) -> str:
    """Undo WikiText's spacing so the tokenizer sees ordinary prose."""
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".").replace("<unk>", "[UNK]")
    text = re.sub(r" ([.,;:!?)\]]|'s\b|n't\b)", r"\1", text)
    return re.sub(r"([(\[]) ", r"\1", text).strip()


def read_articles(path: str | Path) -> list[tuple[str, list[Block]]]:
    """``(title, blocks)`` of each article of a WikiText file, in file order."""
    articles: list[tuple[str, list[Block]]] = []
    heading: str | None = None
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        if m := TITLE.match(line):
            articles.append((detokenize(m.group(1)), []))
            heading = None
        elif m := HEADING.match(line):
            heading = detokenize(m.group(1))
        elif not articles:
            raise ValueError(f"{path} line {lineno}: text before the first ' = Title = ' heading; not WikiText")
        else:
            sentences = [detokenize(s) for s in SENTENCE_END.split(line.strip())]
            articles[-1][1].append(Block([s for s in sentences if s], heading))
            heading = None
    return articles


def _load_tokenizer(shared: Path):
    from m2bert.data.tokenizer import load_tokenizer

    vocab = shared / "data" / "bert-base-uncased" / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab} is missing: the retrieval set counts bert-base-uncased tokens "
                                f"(--shared must be the shared folder holding data/bert-base-uncased/vocab.txt)")
    return load_tokenizer(vocab)


def _tokenized_articles(shared: Path) -> list[tuple[str, int, str, list[Block], list[int]]]:
    """``(split, index, title, blocks, tokens per block)`` of every article of WikiText-2 valid+test."""
    tok = _load_tokenizer(shared)
    out = []
    for split in SPLITS:
        path = shared / "data" / "wikitext" / "wikitext-2" / f"{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (--shared must hold data/wikitext/wikitext-2/{split}.txt)")
        for a, (title, blocks) in enumerate(read_articles(path)):
            if blocks:
                lengths = [len(ids) for ids in tok([b.text() for b in blocks], add_special_tokens=False)["input_ids"]]
                out.append((split, a, title, blocks, lengths))
    return out


def _check_range(min_tokens: int, max_tokens: int) -> None:
    if not 0 < min_tokens <= max_tokens:
        raise ValueError(f"need 0 < min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")


def build_documents(shared: str | Path, min_tokens: int = 64, max_tokens: int = 8192,
                    seed: int = 0) -> list[Document]:
    """Articles of WikiText-2 valid+test cut into chunks of whole paragraphs, each up to a target length drawn
    log-uniformly in [min_tokens, max_tokens] (a paragraph longer than its target is kept whole)."""
    _check_range(min_tokens, max_tokens)
    docs: list[Document] = []
    for split, a, title, blocks, lengths in _tokenized_articles(Path(shared)):
        chunks: list[tuple[list[Block], int]] = []
        current: list[Block] = []
        size = 0
        rng = random.Random(f"{seed}:{split}:{title}")
        target = _log_uniform(rng, min_tokens, max_tokens)
        for block, n in zip(blocks, lengths):
            current.append(block)
            size += n
            if size >= target:
                chunks.append((current, size))
                current, size = [], 0
                target = _log_uniform(rng, min_tokens, max_tokens)
        if current:
            if chunks and size < min_tokens:  # a short tail joins the chunk before it
                chunks[-1] = (chunks[-1][0] + current, chunks[-1][1] + size)
            else:
                chunks.append((current, size))
        for c, (chunk, size) in enumerate(chunks):
            part = f" ({c + 1}/{len(chunks)})" if len(chunks) > 1 else ""
            docs.append(Document(f"{split}-{a:03d}-{c:02d}", title + part, chunk, size + 2))
    return docs


def sample_documents(shared: str | Path | None = None, n: int = 1000, min_tokens: int = 64, max_tokens: int = 8192,
                     seed: int = 0) -> list[str]:
    """``n`` texts for embedding benchmarks, lengths log-uniform in [min_tokens, max_tokens] (WordPiece tokens, at
    paragraph granularity): windows of consecutive paragraphs at random places in random articles long enough.
    Windows may overlap (WikiText-2 holds ~550k tokens, fewer than 1000 long documents need), which a
    throughput benchmark does not mind; the retrieval set uses :func:`build_documents` (no overlap)."""
    from m2bert.paths import shared_dir

    _check_range(min_tokens, max_tokens)
    articles = _tokenized_articles(Path(shared or shared_dir()))
    totals = [sum(lengths) for *_, lengths in articles]
    texts = []
    for i in range(n):
        rng = random.Random(f"{seed}:sample:{i}")
        target = _log_uniform(rng, min_tokens, max_tokens)
        fits = [k for k, t in enumerate(totals) if t >= target] or [max(range(len(totals)), key=totals.__getitem__)]
        _, _, _, blocks, lengths = articles[rng.choice(fits)]
        # a start from which the rest of the article still reaches the target
        rest = [sum(lengths[j:]) for j in range(len(lengths))]
        starts = [j for j, r in enumerate(rest) if r >= target] or [0]
        j = rng.choice(starts)
        window, size = [], 0
        while j < len(blocks) and size < target:
            window.append(blocks[j].text())
            size += lengths[j]
            j += 1
        texts.append("\n\n".join(window))
    return texts


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


def load_documents(shared: str | Path | None = None, min_tokens: int = 64, max_tokens: int = 8192,
                   seed: int = 0) -> list[str]:
    """The documents' texts (for embedding benchmarks): see :func:`build_documents`."""
    from m2bert.paths import shared_dir

    return [d.text() for d in build_documents(shared or shared_dir(), min_tokens, max_tokens, seed)]


def _digest(*parts: object) -> str:
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()


def _take_queries(doc: Document, k: int, seed: int) -> list[str]:
    """Remove up to ``k`` sentences from ``doc`` (in place) and return them; at least two sentences stay."""
    candidates = [(b, i, s) for b in doc.blocks for i, s in enumerate(b.sentences)
                  if QUERY_WORDS[0] <= len(s.split()) <= QUERY_WORDS[1]]
    total = sum(len(b.sentences) for b in doc.blocks)
    k = max(0, min(k, total - 2))
    candidates.sort(key=lambda c: _digest(seed, doc.doc_id, c[2]))
    taken: list[str] = []
    removed: set[tuple[int, int]] = set()
    for block, i, sentence in candidates:
        if len(taken) == k:
            break
        if sentence in taken:
            continue
        taken.append(sentence)
        removed.add((id(block), i))
    for block in doc.blocks:
        block.sentences = [s for i, s in enumerate(block.sentences) if (id(block), i) not in removed]
    text = doc.text()
    return [q for q in taken if q not in text]  # a sentence that also occurs elsewhere in the document is no query


def build_retrieval_set(shared: str | Path, min_tokens: int = 64, max_tokens: int = 8192, queries_per_doc: int = 2,
                        eval_fraction: float = 0.2, seed: int = 0) -> RetrievalSet:
    """Documents, queries removed from them, and the train/eval split by document (see the module docstring)."""
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    docs = build_documents(shared, min_tokens, max_tokens, seed)
    queries: dict[str, str] = {}
    train: dict[str, str] = {}
    test: dict[str, str] = {}
    for doc in docs:
        is_eval = int(_digest(seed, "split", doc.doc_id)[:8], 16) / 16**8 < eval_fraction
        for j, q in enumerate(_take_queries(doc, queries_per_doc, seed)):
            qid = f"q-{doc.doc_id}-{j}"
            queries[qid] = q
            (test if is_eval else train)[qid] = doc.doc_id
    corpus = {d.doc_id: d for d in docs}
    return RetrievalSet(corpus, queries, train, test, _stats(docs, train, test, dict(
        min_tokens=min_tokens, max_tokens=max_tokens, queries_per_doc=queries_per_doc,
        eval_fraction=eval_fraction, seed=seed)))


def _stats(docs: Sequence[Document], train: dict, test: dict, params: dict) -> dict:
    lengths = sorted(d.n_tokens for d in docs)

    def pct(p: float) -> int:
        return lengths[min(len(lengths) - 1, int(p / 100 * len(lengths)))]

    return {"params": params, "documents": len(docs), "train_queries": len(train), "eval_queries": len(test),
            "eval_documents": len(set(test.values())),
            "doc_tokens": {"min": lengths[0], "p25": pct(25), "median": pct(50), "p75": pct(75), "p90": pct(90),
                           "max": lengths[-1], "total": sum(lengths),
                           "over_512": sum(n > 512 for n in lengths), "over_2048": sum(n > 2048 for n in lengths)}}


def _jsonl(rows: Sequence[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def _tsv(qrels: dict[str, str]) -> str:
    return "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in sorted(qrels.items()))


def write_retrieval_set(rs: RetrievalSet, out: str | Path) -> Path:
    """BEIR layout, written atomically (a finished folder or none)."""
    out = Path(out)
    with atomic_directory(out) as tmp:
        (tmp / "corpus.jsonl").write_text(_jsonl([{"_id": d.doc_id, "title": d.title, "text": d.text()}
                                                  for d in rs.corpus.values()]), encoding="utf-8")
        (tmp / "queries.jsonl").write_text(_jsonl([{"_id": q, "text": t} for q, t in sorted(rs.queries.items())]),
                                           encoding="utf-8")
        (tmp / "qrels").mkdir()
        (tmp / "qrels" / "train.tsv").write_text(_tsv(rs.train_qrels), encoding="utf-8")
        (tmp / "qrels" / "test.tsv").write_text(_tsv(rs.test_qrels), encoding="utf-8")
        (tmp / "stats.json").write_text(json.dumps(rs.stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


@dataclass
class LoadedSet:
    """A retrieval set read back from its folder: what fine-tuning and evaluation consume."""

    corpus: dict[str, str]       # document id -> text
    queries: dict[str, str]
    train_qrels: dict[str, str]
    test_qrels: dict[str, str]

    def train_pairs(self) -> list[tuple[str, str]]:
        return [(self.queries[q], self.corpus[d]) for q, d in sorted(self.train_qrels.items())]


def read_retrieval_set(folder: str | Path) -> LoadedSet:
    """Read a folder :func:`write_retrieval_set` wrote; a missing or malformed file is named with its line."""
    folder = Path(folder)

    def rows(name: str) -> dict[str, str]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: write the set with m2bert-make-retrieval --out {folder}")
        out: dict[str, str] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                row = json.loads(line)
                _id, text = row["_id"], row["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path} line {lineno}: expected a JSON object with _id and text ({exc})") from exc
            # Strings only: str() made {"_id": NaN} the id "nan" and {"_id": 1} the id "1". An id is what the qrels
            # TSV names, so it is non-blank and holds no tab or line break.
            if not isinstance(_id, str) or not _id.strip() or any(c in _id for c in "\t\r\n"):
                raise ValueError(f"{path} line {lineno}: _id must be a non-blank JSON string without tabs or line "
                                 f"breaks, got {json.dumps(_id)}")
            if not isinstance(text, str):
                raise ValueError(f"{path} line {lineno}: text must be a JSON string, got {json.dumps(text)}")
            if _id in out:
                raise ValueError(f"{path} line {lineno}: _id {_id!r} appears twice")
            out[_id] = text
        return out

    def qrels(name: str) -> dict[str, str]:
        path = folder / "qrels" / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: write the set with m2bert-make-retrieval --out {folder}")
        out = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], 2):
            parts = line.split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path} line {lineno}: expected 'query-id<TAB>corpus-id<TAB>score'")
            out[parts[0]] = parts[1]
        return out

    corpus = rows("corpus.jsonl")
    queries = rows("queries.jsonl")
    loaded = LoadedSet(corpus, queries, qrels("train.tsv"), qrels("test.tsv"))
    for name, qr in (("train.tsv", loaded.train_qrels), ("test.tsv", loaded.test_qrels)):
        for q, d in qr.items():
            if q not in queries or d not in corpus:
                raise ValueError(f"{folder / 'qrels' / name}: {q} -> {d} names a query or document that is missing")
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``make_retrieval.py --shared ../shared --out DIR``; prints the set's statistics as JSON."""
    ap = cli_help.ArgumentParser(__doc__)
    ap.add_argument("--shared", default=None, help="the shared folder (default: ../shared beside the repository)")
    ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
    ap.add_argument("--min-tokens", type=int, default=64, help="shortest chunk target (WordPiece tokens)")
    ap.add_argument("--max-tokens", type=int, default=8192, help="longest chunk target (WordPiece tokens)")
    ap.add_argument("--queries-per-doc", type=int, default=2, help="sentences removed from each document as queries")
    ap.add_argument("--eval-fraction", type=float, default=0.2, help="share of documents whose queries are held out")
    ap.add_argument("--seed", type=int, default=0, help="seed of the chunk lengths, the queries and the held-out split")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from m2bert.paths import shared_dir

    try:
        rs = build_retrieval_set(args.shared or shared_dir(), args.min_tokens, args.max_tokens, args.queries_per_doc,
                                 args.eval_fraction, args.seed)
    except (FileNotFoundError, ValueError) as exc:
        log.error("error: %s", exc)
        return 2
    write_retrieval_set(rs, args.out)
    print(json.dumps(rs.stats, indent=2, sort_keys=True))
    return 0


__all__ = ["Block", "Document", "LoadedSet", "RetrievalSet", "build_documents", "build_retrieval_set",
           "detokenize", "load_documents", "main", "read_articles", "read_retrieval_set", "sample_documents",
           "write_retrieval_set"]

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
