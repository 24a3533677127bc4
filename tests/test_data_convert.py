"""C4 → MDS conversion: round trips in both modes, bad inputs, overwrite and interruption safety."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from m2bert.data import convert_c4
from m2bert.data.convert_c4 import C4InputError, convert
from tests.conftest import shared_path

N_DOCS = 120


def _records(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


def _read_split(folder: Path) -> list[dict]:
    from streaming import StreamingDataset

    ds = StreamingDataset(local=str(folder), shuffle=False, batch_size=1)
    return [ds[i] for i in range(ds.size)]


@pytest.fixture(scope="module")
def c4_sample() -> Path:
    return shared_path("data", "c4", "c4_sample.jsonl")


@pytest.fixture(scope="module")
def bert_vocab() -> Path:
    return shared_path("data", "bert-base-uncased", "vocab.txt")


def test_raw_text_round_trip(tmp_path: Path, c4_sample: Path) -> None:
    summary = convert(str(c4_sample), str(tmp_path / "out"), splits=["train"], limit=N_DOCS, progress=False)
    assert summary["splits"]["train"]["documents"] == N_DOCS
    rows = _read_split(tmp_path / "out" / "train")
    assert [r["text"] for r in rows] == [r["text"] for r in _records(c4_sample, N_DOCS)]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no partial folders left


def test_pretokenised_rows_cover_input(tmp_path: Path, c4_sample: Path, bert_vocab: Path) -> None:
    from m2bert.data.tokenizer import load_tokenizer

    tok = load_tokenizer(bert_vocab)
    convert(str(c4_sample), str(tmp_path / "out"), splits=["train"], tokenizer=str(bert_vocab), concat_tokens=128,
            limit=N_DOCS, progress=False)
    index = json.loads((tmp_path / "out" / "train" / "index.json").read_text())
    assert index["shards"][0]["column_encodings"] == ["ndarray:uint16:128"]
    rows = [np.asarray(r["tokens"], dtype=np.int64) for r in _read_split(tmp_path / "out" / "train")]
    assert rows and all(r.shape == (128,) for r in rows)
    assert all(r[0] == tok.cls_token_id for r in rows)
    # Only the last row may hold padding: no padding is wasted.
    assert all((r != tok.pad_token_id).all() for r in rows[:-1])
    stream = [int(t) for r in rows for t in r[1:] if t != tok.pad_token_id]
    texts = [r["text"] for r in _records(c4_sample, N_DOCS)]
    expected: list[int] = []
    for ids in tok(texts, add_special_tokens=False)["input_ids"]:
        expected += ids + [tok.sep_token_id]
    assert stream == expected
    # And the decoded text covers the input: every document's words appear in order.
    decoded = tok.decode(stream).split(" [SEP] ")
    assert len([d for d in decoded if d.strip()]) == N_DOCS
    assert decoded[0].split()[:5] == tok.decode(tok(texts[0], add_special_tokens=False)["input_ids"]).split()[:5]


def test_workers_give_identical_shards(tmp_path: Path, c4_sample: Path, bert_vocab: Path) -> None:
    kw = dict(splits=["train"], tokenizer=str(bert_vocab), concat_tokens=64, limit=40, progress=False,
              compression=None)
    convert(str(c4_sample), str(tmp_path / "a"), num_workers=0, **kw)
    convert(str(c4_sample), str(tmp_path / "b"), num_workers=1, **kw)
    a = (tmp_path / "a" / "train" / "shard.00000.mds").read_bytes()
    assert a == (tmp_path / "b" / "train" / "shard.00000.mds").read_bytes()


def test_gzip_input_and_directory_splits(tmp_path: Path) -> None:
    gz = shared_path("data", "c4", "c4-sample.01.json.gz")
    src = tmp_path / "src"
    src.mkdir()
    (src / "c4-train.00000-of-00001.json.gz").write_bytes(gz.read_bytes())
    lines = gzip.decompress(gz.read_bytes()).decode().splitlines()
    with gzip.open(src / "c4-validation.00000-of-00001.json.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines[:3]) + "\n")
    summary = convert(str(src), str(tmp_path / "out"), splits=["train", "val_small"], progress=False)
    assert summary["splits"]["train"]["documents"] == 10
    assert summary["splits"]["val_small"]["documents"] == 3
    assert [r["text"] for r in _read_split(tmp_path / "out" / "val_small")] == [json.loads(x)["text"] for x in lines[:3]]


def test_refuses_to_overwrite_without_force(tmp_path: Path, c4_sample: Path) -> None:
    out = tmp_path / "out"
    convert(str(c4_sample), str(out), splits=["train"], limit=5, progress=False)
    with pytest.raises(FileExistsError, match="--force"):
        convert(str(c4_sample), str(out), splits=["train"], limit=5, progress=False)
    summary = convert(str(c4_sample), str(out), splits=["train"], limit=7, force=True, progress=False)
    assert summary["splits"]["train"]["rows"] == 7
    assert len(_read_split(out / "train")) == 7


def test_interrupted_conversion_leaves_nothing_complete(tmp_path: Path, c4_sample: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming import MDSWriter

    real_write = MDSWriter.write
    calls = {"n": 0}

    def flaky_write(self: MDSWriter, sample: dict) -> None:
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt
        real_write(self, sample)

    monkeypatch.setattr(MDSWriter, "write", flaky_write)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert(str(c4_sample), str(out), splits=["train"], limit=100, progress=False, size_limit=4096)
    assert not (out / "train").exists()
    assert not list(out.rglob("index.json"))
    assert not list(out.iterdir())  # the hidden partial folder was removed too


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


GOOD = b'{"text": "A fine document.", "timestamp": "2019-04-25T12:57:54Z", "url": "https://example.com/"}\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD + b"this is not json\n", r"bad\.jsonl line 2: not JSON"),
        (GOOD + b'{"timestamp": "x", "url": "y"}\n', r"bad\.jsonl line 2: record has no 'text' field"),
        (GOOD + b'{"text": "caf\xe9 au lait"}\n', r"bad\.jsonl line 2: undecodable bytes"),
        (GOOD + b'["a", "list"]\n', r"bad\.jsonl line 2: not a JSON object"),
        (b"", r"bad\.jsonl is empty"),
    ],
    ids=["not-json", "no-text", "undecodable", "not-object", "empty-file"],
)
def test_bad_input_names_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    src = _write(tmp_path / "bad.jsonl", content)
    with pytest.raises(C4InputError, match=message):
        convert(str(src), str(tmp_path / "out"), splits=["train"], progress=False)
    assert not (tmp_path / "out" / "train").exists()


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(C4InputError, match=r"nope\.jsonl does not exist"):
        convert(str(tmp_path / "nope.jsonl"), str(tmp_path / "out"), splits=["train"], progress=False)


def test_skip_bad_counts(tmp_path: Path) -> None:
    src = _write(tmp_path / "mixed.jsonl",
                 GOOD + b"garbage\n" + b'{"url": "u"}\n' + b'{"text": "\xff\xfe"}\n' + GOOD)
    summary = convert(str(src), str(tmp_path / "out"), splits=["train"], skip_bad=True, progress=False)
    s = summary["splits"]["train"]
    assert (s["documents"], s["skipped"]) == (2, 3)
    assert s["skipped_reasons"] == {"not JSON": 1, "has no 'text'": 1, "undecodable bytes": 1}


def test_missing_validation_files_is_a_clear_error(tmp_path: Path, c4_sample: Path) -> None:
    with pytest.raises(C4InputError, match="split 'val' reads C4's 'validation' files"):
        convert(str(c4_sample), str(tmp_path / "out"), splits=["val"], progress=False)


def test_cli_reports_errors_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path / "bad.jsonl", GOOD + b"{not json\n")
    assert convert_c4.main(["--source", str(src), "--out-root", str(tmp_path / "o"), "--splits", "train",
                            "--no-progress"]) == 2
    src2 = _write(tmp_path / "ok.jsonl", GOOD * 3)
    assert convert_c4.main(["--source", str(src2), "--out-root", str(tmp_path / "o2"), "--splits", "train",
                            "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["train"]["rows"] == 3 and out["mode"] == "text"


def test_force_replaces_all_splits_or_none(tmp_path: Path) -> None:
    """--force --splits train val with a bad validation file: train is not replaced either (no mixed dataset)."""
    src = tmp_path / "src"
    src.mkdir()
    train = _write(src / "c4-train.00000-of-00001.json", GOOD * 5)
    val = _write(src / "c4-validation.00000-of-00001.json", GOOD * 3)
    out = tmp_path / "out"
    convert(str(src), str(out), splits=["train", "val"], progress=False)
    train.write_bytes(GOOD * 9)
    val.write_bytes(GOOD + b"this is not json\n")
    with pytest.raises(C4InputError, match=r"c4-validation.*line 2: not JSON"):
        convert(str(src), str(out), splits=["train", "val"], force=True, progress=False)
    assert len(_read_split(out / "train")) == 5  # the old train, not the new one
    assert len(_read_split(out / "val")) == 3
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]  # no hidden partial folders left
    val.write_bytes(GOOD * 4)
    convert(str(src), str(out), splits=["train", "val"], force=True, progress=False)
    assert (len(_read_split(out / "train")), len(_read_split(out / "val"))) == (9, 4)
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
