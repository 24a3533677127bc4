"""Tokenizers: BERT-compatible special ids after offline training; clear errors for missing paths."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from m2bert.data.tokenizer import BERT_SPECIAL_IDS, load_tokenizer, main, train_wordpiece
from tests.conftest import shared_path

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Streaming datasets read shards written by a converter.",
    "Monarch matrices are products of block-diagonal matrices and permutations.",
] * 50


def test_train_wordpiece_bert_ids_and_autotokenizer(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "timestamp": "", "url": ""}) + "\n" for t in TEXTS))
    out = train_wordpiece([corpus], tmp_path / "tok", vocab_size=400, min_frequency=1)
    tok = AutoTokenizer.from_pretrained(str(out))
    assert type(tok).__name__ == "BertTokenizerFast"
    for token, want in BERT_SPECIAL_IDS.items():
        assert tok.convert_tokens_to_ids(token) == want
    assert tok.convert_ids_to_tokens(1) == "[unused0]"
    assert len(tok) <= 400
    enc = tok("The QUICK fox")
    assert enc["input_ids"][0] == 101 and enc["input_ids"][-1] == 102
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == "the quick fox"  # uncased
    assert load_tokenizer(out).vocab == tok.vocab


def test_cli_refuses_non_empty_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS))
    assert main([str(corpus), "--out", str(tmp_path / "tok"), "--vocab-size", "300", "--min-frequency", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] <= 300
    with pytest.raises(SystemExit):
        main([str(corpus), "--out", str(tmp_path / "tok"), "--vocab-size", "300"])


def test_load_bert_vocab_file() -> None:
    tok = load_tokenizer(shared_path("data", "bert-base-uncased", "vocab.txt"))
    assert len(tok) == 30522
    assert tok("hello world")["input_ids"] == [101, 7592, 2088, 102]


def test_missing_paths_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "absent")):
        load_tokenizer(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="corpus file .*nothere.txt"):
        train_wordpiece([tmp_path / "nothere.txt"], tmp_path / "t", vocab_size=300)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_pickled_tokenizer_is_refused(tmp_path: Path) -> None:
    """A TransfoXL tokenizer folder's vocab.pkl is unpickled by transformers: refused, in one line, unread."""
    import pickle

    marker = tmp_path / "marker"
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TransfoXLTokenizer"}))
    (folder / "vocab.pkl").write_bytes(pickle.dumps({"idx2sym": ["a"], "note": _Payload(marker)}))
    with pytest.raises(ValueError) as err:
        load_tokenizer(folder)
    msg = str(err.value)
    assert "\n" not in msg and "vocab.pkl" in msg and "never loads pickled tokenizers" in msg, msg
    assert not marker.exists()
