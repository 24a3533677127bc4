"""The offline retrieval set (WikiText-2 → BEIR layout) and the m2bert-retrieval fine-tuning CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from m2bert.embeddings import retrieval_data as rd
from tests.conftest import shared_path


def _article_slice(src: Path, n: int) -> str:
    """The first ``n`` articles of a WikiText file."""
    lines = src.read_text(encoding="utf-8").split("\n")
    starts = [i for i, line in enumerate(lines) if rd.TITLE.match(line)]
    return "\n".join(lines[: starts[n]] if n < len(starts) else lines) + "\n"


@pytest.fixture(scope="module")
def small_shared(tmp_path_factory) -> Path:
    """A shared-folder layout holding the first articles of WikiText-2 valid/test and BERT's vocabulary."""
    root = tmp_path_factory.mktemp("shared")
    wt = root / "data" / "wikitext" / "wikitext-2"
    wt.mkdir(parents=True)
    for split, n in (("valid", 6), ("test", 6)):
        (wt / f"{split}.txt").write_text(_article_slice(shared_path("data", "wikitext", "wikitext-2", f"{split}.txt"), n),
                                         encoding="utf-8")
    (root / "data" / "bert-base-uncased").mkdir()
    (root / "data" / "bert-base-uncased" / "vocab.txt").symlink_to(shared_path("data", "bert-base-uncased", "vocab.txt"))
    return root


@pytest.fixture(scope="module")
def small_set(small_shared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("set") / "retrieval"
    assert rd.main(["--shared", str(small_shared), "--out", str(out), "--max-tokens", "2048"]) == 0
    return out


def test_set_is_deterministic_and_queries_are_removed(small_shared, small_set, tmp_path) -> None:
    again = tmp_path / "again"
    assert rd.main(["--shared", str(small_shared), "--out", str(again), "--max-tokens", "2048"]) == 0
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv", "stats.json"):
        assert (small_set / name).read_bytes() == (again / name).read_bytes(), name

    loaded = rd.read_retrieval_set(small_set)
    assert loaded.train_qrels and loaded.test_qrels
    assert not set(loaded.train_qrels) & set(loaded.test_qrels)
    # split by document: no eval document is a training positive
    assert not set(loaded.train_qrels.values()) & set(loaded.test_qrels.values())
    for qid, doc in {**loaded.train_qrels, **loaded.test_qrels}.items():
        query = loaded.queries[qid]
        assert query not in loaded.corpus[doc], qid            # removed from its document
        assert 8 <= len(query.split()) <= 48
        assert "@-@" not in query and "<unk>" not in query    # WikiText's tokenisation undone
    stats = json.loads((small_set / "stats.json").read_text())
    assert stats["documents"] == len(loaded.corpus)
    assert stats["train_queries"] == len(loaded.train_qrels) and stats["eval_queries"] == len(loaded.test_qrels)


def test_documents_are_chunks_of_mixed_length(small_shared) -> None:
    docs = rd.build_documents(small_shared, min_tokens=64, max_tokens=2048)
    lengths = [d.n_tokens for d in docs]
    assert len(docs) > 12                                     # 12 articles, cut into chunks
    assert min(lengths) < 300 and max(lengths) > 1000         # very mixed lengths
    assert max(lengths) < 2048 + 700                          # a chunk closes at its target (+ one paragraph)
    texts = rd.load_documents(small_shared, min_tokens=64, max_tokens=2048)
    assert texts == [d.text() for d in docs] and all(isinstance(t, str) and t for t in texts)
    ids = [d.doc_id for d in docs]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"(valid|test)-\d{3}-\d{2}", i) for i in ids)


def test_sample_documents_for_benchmarks(small_shared) -> None:
    texts = rd.sample_documents(small_shared, n=40, min_tokens=64, max_tokens=2048)
    assert len(texts) == 40 and texts == rd.sample_documents(small_shared, n=40, min_tokens=64, max_tokens=2048)
    from m2bert.data.tokenizer import load_tokenizer

    tok = load_tokenizer(small_shared / "data" / "bert-base-uncased" / "vocab.txt")
    lengths = sorted(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
    assert lengths[0] >= 50 and lengths[-1] > 1000 and lengths[len(lengths) // 2] < 1000   # log-uniform: mixed


def test_detokenize() -> None:
    assert rd.detokenize("a 0 @.@ 7 kg , the 1 @,@ 000 lake @-@ side ( in ) <unk> 's") == \
        "a 0.7 kg, the 1,000 lake-side (in) [UNK]'s"


def test_missing_shared_is_one_line(tmp_path, caplog) -> None:
    assert rd.main(["--shared", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "vocab.txt is missing" in caplog.text
    assert not (tmp_path / "out").exists()


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``m2bert-retrieval`` run in-process through its real entry (``main()`` with ``sys.argv``)."""
    import sys

    from m2bert import cli
    from m2bert.embeddings.cli import main

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # offline=true sets them; restored after the test
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(sys, "argv", ["m2bert-retrieval", *args])
    monkeypatch.setattr(cli, "_task_started", False)
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_finetune_through_the_cli_beats_the_untrained_model(tiny_hf, small_set, tmp_path, monkeypatch, capsys) -> None:
    from sentence_transformers import SentenceTransformer

    runs = tmp_path / "runs"
    args = ["retrieval=m2_bert_tiny", f"start.path={tiny_hf}", f"data.folder={small_set}", f"run_root={runs}",
            "run_name=tiny", "logging_steps=100"]
    code, out, err = _cli(args, monkeypatch, capsys)
    assert code == 0, err
    results = json.loads((runs / "tiny" / "results.json").read_text())
    assert json.loads(out[out.rindex('{\n  "run_name"'):])["after"] == results["after"]   # the final report
    before, after = results["before"], results["after"]
    # 30 steps at lr 1e-3 from a random tiny model: nDCG@10 0.065 -> 0.20 on 28 held-out queries over 70 documents
    assert results["train"]["steps"] == 30 and results["data"]["corpus"] == 70
    assert after["ndcg@10"] > before["ndcg@10"] + 0.05 and after["mrr@10"] > before["mrr@10"]
    assert after["recall@10"] > before["recall@10"]
    assert results["precision"] == "fp32" and results["recipe"]["max_seq_length"] == 128
    docs = results["truncation"]["documents"]                  # documents up to ~2k tokens, cut at 128: said so
    assert docs["texts"] == 70 and 0 < docs["cut"] < 70 and docs["max_tokens"] > 1000 and 0 < docs["tokens_dropped"] < 1
    assert json.loads((runs / "tiny" / "start" / "tokenizer_config.json").read_text())["model_max_length"] == 128

    model = SentenceTransformer(str(runs / "tiny" / "model"), device="cpu", local_files_only=True)
    assert model.encode(["a query"]).shape == (1, 64)
    assert (runs / "tiny" / "start" / "config.json").is_file() and not (runs / "tiny" / "trainer").exists()

    # the same run name again: refused in one line, the finished run untouched
    code, _, err = _cli(args, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "already holds a run (results.json, model" in err
    assert json.loads((runs / "tiny" / "results.json").read_text()) == results


@pytest.mark.parametrize("override,expect", [
    ("+retrieval.lrr=1e-3", "retrieval.lrr (did you mean retrieval.lr?): no such retrieval setting"),
    ("retrieval.max_seq_length=4096", "retrieval.max_seq_length=4096 exceeds what"),
    ("retrieval.pooling=max", "retrieval.pooling='max'; choose one of cls, mean"),
    ("start.kind=onnx", "start.kind='onnx'; choose one of hf, composer, original"),
    ("retrieval.scheduler=step", "retrieval.scheduler='step'; choose one of linear, cosine, constant_with_warmup"),
    ("model=m2_bert_tiny", "no 'model' group here"),
    ("start.tokenizer=bert-base-uncased", "is not a local file or folder and offline=true"),
    ("retrieval=m2_bert_80m_2k", "retrieval.max_seq_length=2048 exceeds what"),
])
def test_config_errors_are_one_line(tiny_hf, small_set, tmp_path, monkeypatch, capsys, override, expect) -> None:
    args = ["retrieval=m2_bert_tiny", f"start.path={tiny_hf}", f"data.folder={small_set}",
            f"run_root={tmp_path / 'runs'}", "run_name=bad", override]
    code, _, err = _cli(args, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and expect in err, err
    assert not (tmp_path / "runs" / "bad").exists()       # no empty run folder left behind


def test_missing_values_are_one_line(tmp_path, monkeypatch, capsys) -> None:
    code, _, err = _cli([f"run_root={tmp_path / 'runs'}"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "data.folder, start.path are not set" in err, err


def test_help_lists_recipes(monkeypatch, capsys) -> None:
    code, out, _ = _cli(["--help"], monkeypatch, capsys)
    assert code == 0 and out.startswith("m2bert-retrieval: fine-tune a pretrained M2-BERT")
    assert "m2_bert_80m_2k, m2_bert_80m_32k, m2_bert_80m_8k, m2_bert_tiny" in out and "[2048]" in out


@pytest.mark.parametrize("bad, problem", [
    ('{"_id": NaN, "title": "", "text": "x"}', r"_id must be a non-blank JSON string without tabs or line breaks, got NaN"),
    ('{"_id": 7, "title": "", "text": "x"}', r"_id must be a non-blank JSON string .*, got 7"),
    ('{"_id": " ", "title": "", "text": "x"}', r'_id must be a non-blank JSON string .*, got " "'),
    ('{"_id": "d\\t1", "title": "", "text": "x"}', r"_id must be a non-blank JSON string without tabs"),
    ('{"_id": "d1", "title": "", "text": null}', r"text must be a JSON string, got null"),
    ('{"_id": "d0", "title": "", "text": "again"}', r"_id 'd0' appears twice"),
], ids=["nan", "number", "blank", "tab", "null-text", "duplicate"])
def test_retrieval_ids_are_strings(tmp_path, monkeypatch, capsys, bad, problem) -> None:
    """str() took {"_id": NaN} as the id "nan" (and 7 as "7", null text as "None", a repeated id silently replaced
    the first): ids and texts must be JSON strings, and the CLI stops with one line naming the file and line."""
    folder = tmp_path / "set"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text('{"_id": "d0", "title": "", "text": "a document"}\n' + bad + "\n")
    (folder / "queries.jsonl").write_text('{"_id": "q0", "text": "a query"}\n')
    for name in ("train.tsv", "test.tsv"):
        (folder / "qrels" / name).write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\n")
    with pytest.raises(ValueError, match=rf"^{folder / 'corpus.jsonl'} line 2: {problem}"):
        rd.read_retrieval_set(folder)
    code, _, err = _cli(["start.path=none", f"data.folder={folder}", f"run_root={tmp_path / 'runs'}"], monkeypatch,
                        capsys)
    assert code == 2 and re.search(rf"data.folder: {folder / 'corpus.jsonl'} line 2: {problem}", err)
    assert len(err.strip().splitlines()) == 1


def test_run_name_and_lock_keep_runs_apart(tiny_hf, small_set, tmp_path, monkeypatch, capsys) -> None:
    """A run name is one plain folder name (nothing lands outside run_root); a run folder in use by another run is
    refused in one line naming its lock and holder."""
    import signal
    import socket

    from tests.conftest import hold_lock

    runs = tmp_path / "root" / "runs"
    args = ["retrieval=m2_bert_tiny", f"start.path={tiny_hf}", f"data.folder={small_set}", f"run_root={runs}"]
    code, _, err = _cli([*args, "run_name=../escaped"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "run_name='../escaped' is not a plain name" in err, err
    assert list(tmp_path.iterdir()) == []
    holder = hold_lock(runs / "busy")
    try:
        code, _, err = _cli([*args, "run_name=busy"], monkeypatch, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{runs / 'busy' / 'run.lock'} is held by pid {holder.pid} on {socket.gethostname()}" in err, err
        assert [p.name for p in (runs / "busy").iterdir()] == ["run.lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_truncation_is_counted_and_logged_once(caplog) -> None:
    from m2bert.data.tokenizer import load_tokenizer
    from m2bert.embeddings.retrieval import report_truncation

    tok = load_tokenizer(shared_path("data", "bert-base-uncased", "vocab.txt"))
    texts = {"documents": ["short one", " ".join(["lobster"] * 38), " ".join(["lobster"] * 98)], "queries": ["a b"]}
    with caplog.at_level("WARNING", logger="m2bert.retrieval"):
        stats = report_truncation(tok, texts, max_seq_length=20, limit=128)
    assert stats["documents"] == {"texts": 3, "cut": 2, "max_seq_length": 20, "median_tokens": 40,
                                  "median_tokens_cut": 70.0, "max_tokens": 100, "tokens_dropped": 0.6944}
    assert stats["queries"]["cut"] == 0
    assert caplog.messages == ["2 of 3 documents longer than 20 tokens were cut (their median 70 tokens, max 100; 69% "
                               "of the documents' tokens dropped); raise retrieval.max_seq_length (up to 128, this "
                               "model's length) to keep them"]


def test_bf16_evaluation_runs_under_autocast_and_agrees(tiny_hf, small_set) -> None:
    """precision=bf16 embeds the evaluation under bf16 autocast too (not only the training steps): the encoder's
    forward sees autocast on, and the scores stay close to fp32's."""
    import torch

    from m2bert.embeddings.retrieval import evaluate
    from m2bert.embeddings.retrieval_data import read_retrieval_set
    from m2bert.embeddings.sentence_transformers import build_sentence_transformer

    rs = read_retrieval_set(small_set)
    model = build_sentence_transformer(tiny_hf, max_seq_length=128, device="cpu")
    seen = []
    model[0].auto_model.embeddings.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    queries = {q: rs.queries[q] for q in rs.test_qrels}
    relevant = {q: {d} for q, d in rs.test_qrels.items()}
    scores = {bf16: evaluate(model, queries, rs.corpus, relevant, 16, bf16) for bf16 in (False, True)}
    assert True in seen and False in seen and seen.index(True) > seen.index(False)
    assert set(seen[seen.index(True):]) == {True}
    assert abs(scores[True]["ndcg@10"] - scores[False]["ndcg@10"]) < 0.05
