"""Own text → MDS shards (m2bert-convert-text): plain-text files, JSON lines with another field, a local datasets
dataset, and the held-out split carved by a hash of each document's text (issue 23, "Pretraining on your own text")."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from m2bert.data.convert_text import convert_text, main
from m2bert.data.held_out import is_held_out

DOCS = [f"Document number {i} says something about topic {i % 7}." for i in range(60)]


def _read_split(folder: Path) -> list[str]:
    from streaming import StreamingDataset

    ds = StreamingDataset(local=str(folder), shuffle=False, batch_size=1)
    return [ds[i]["text"] for i in range(ds.size)]


def _txt_folder(root: Path) -> Path:
    """DOCS as .txt files in two folders: one document per file."""
    for i, doc in enumerate(DOCS):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.txt").write_text(doc + "\n", encoding="utf-8")
    return root


def test_txt_files_carve_a_held_out_split_by_hash(tmp_path):
    src = _txt_folder(tmp_path / "src")
    summary = convert_text([str(src)], str(tmp_path / "out"), progress=False)
    train, val = _read_split(tmp_path / "out" / "train"), _read_split(tmp_path / "out" / "val")
    assert sorted(train + val) == sorted(DOCS)  # every document once, nothing lost
    assert val and all(is_held_out(d) for d in val) and not any(is_held_out(d) for d in train)
    assert summary["held_out"].startswith("one document in 20")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train", "val"]  # no partial folders left


def test_held_out_split_is_deterministic(tmp_path):
    """The same documents in another order, files and unit give the same held-out set; so does a rerun."""
    src = _txt_folder(tmp_path / "src")
    convert_text([str(src)], str(tmp_path / "one"), held_out_every=3, progress=False)
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(reversed(DOCS)) + "\n", encoding="utf-8")
    convert_text([str(lines)], str(tmp_path / "two"), txt_unit="line", held_out_every=3, progress=False)
    one, two = _read_split(tmp_path / "one" / "val"), _read_split(tmp_path / "two" / "val")
    assert sorted(one) == sorted(two) == sorted(d for d in DOCS if is_held_out(d, 3))
    # A hash of the text alone (SHA-1, as bench/quality_study.py's corpus has always been split), not Python's
    # per-process hash(): these indices hold in every process.
    assert [i for i, d in enumerate(DOCS) if is_held_out(d, 3)] == [0, 6, 9, 14, 21, 22, 23, 24, 26, 28, 31, 33, 39,
                                                                    41, 42, 43, 48, 51, 56, 57, 58]
    assert [i for i, d in enumerate(DOCS) if is_held_out(d)] == [17, 32, 44, 58]


def test_jsonl_with_another_text_field_and_given_val(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    (tmp_path / "held.jsonl").write_text(json.dumps({"body": "A held-out document."}) + "\n")
    args = ["--source", str(tmp_path / "train.jsonl"), "--out-root", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 2  # no "text" field: one line naming --text-field
    err = capsys.readouterr().err
    assert err.startswith("m2bert-convert-text: error: ") and err.count("\n") == 1, err
    assert "record has no 'text' field" in err and "--text-field" in err
    assert main([*args, "--text-field", "body", "--val-source", str(tmp_path / "held.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["held_out"].startswith("given: ")
    assert _read_split(tmp_path / "out" / "train") == DOCS
    assert _read_split(tmp_path / "out" / "val") == ["A held-out document."]


def test_local_datasets_dataset(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"content": DOCS[:20]}).save_to_disk(str(tmp_path / "ds"))
    convert_text(dataset=str(tmp_path / "ds"), out_root=str(tmp_path / "out"), text_field="content",
                 held_out_every=0, progress=False)
    assert _read_split(tmp_path / "out" / "train") == DOCS[:20]
    assert not (tmp_path / "out" / "val").exists()  # --held-out-every 0: train only (data.eval_split=null)
