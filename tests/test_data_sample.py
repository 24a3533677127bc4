"""The offline sample: deterministic, big enough, C4/GLUE layouts, and it runs the real pipeline."""
from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest
import torch

from m2bert.data.sample import MIN_WORDS, make_sample

C4_FILES = ("c4/en/c4-train.00000-of-00001.json", "c4/en/c4-validation.00000-of-00001.json")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "s"
    make_sample(out)
    return out


def test_identical_across_runs(sample: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_sample(again)
    files = sorted(str(p.relative_to(sample)) for p in sample.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    match, mismatch, errors = filecmp.cmpfiles(sample, again, files, shallow=False)
    assert not mismatch and not errors and len(match) == len(files)


def test_corpus_layout_and_size(sample: Path) -> None:
    words = 0
    for rel in C4_FILES:
        for line in (sample / rel).read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            assert list(rec) == ["text", "timestamp", "url"]
            assert rec["timestamp"] == "2019-04-25T12:57:54Z"
            words += len(rec["text"].split())
    assert words >= MIN_WORDS
    manifest = json.loads((sample / "manifest.json").read_text())
    assert manifest["words"] == words
    lines = [ln for rel in C4_FILES for row in (sample / rel).read_text(encoding="utf-8").splitlines()
             for ln in json.loads(row)["text"].split("\n")]
    for junk in (">>>", "``", ":func:", ":class:", ".. note::", "def ", "import ", "self.", "class "):
        bad = [ln for ln in lines if ln.startswith(junk) or junk in (">>>", "``", ":func:", ":class:") and junk in ln]
        assert len(bad) < 5, (junk, bad[:5])  # cleaned of code and markup


def test_glue_tasks_load_and_are_balanced(sample: Path) -> None:
    from m2bert.data.glue_tasks import load_glue_task

    for task in ("sample-ss", "SAMPLE-PAIR"):
        for split in ("train", "validation"):
            ds = load_glue_task(task, sample / "glue", split)
            assert len(ds) >= 500
            pos = sum(ds["label"]) / len(ds)
            assert 0.4 < pos < 0.6
    train = set(load_glue_task("sample-ss", sample / "glue", "train")["sentence"])
    dev = set(load_glue_task("sample-ss", sample / "glue", "validation")["sentence"])
    assert not train & dev
    pair_train = load_glue_task("sample-pair", sample / "glue", "train")
    pair_dev = load_glue_task("sample-pair", sample / "glue", "validation")
    assert not (set(pair_train["sentence1"]) | set(pair_train["sentence2"])) & set(pair_dev["sentence1"])


def test_converts_and_trains_through_the_c4_path(sample: Path, tmp_path: Path) -> None:
    from m2bert import M2BertConfig, M2BertForMaskedLM
    from m2bert.data.convert_c4 import convert
    from m2bert.data.mlm import build_mlm_dataloader
    from m2bert.data.tokenizer import load_tokenizer, train_wordpiece

    tok_dir = train_wordpiece([sample / C4_FILES[0]], tmp_path / "tok", vocab_size=2000)
    tok = load_tokenizer(tok_dir)
    summary = convert(str(sample / "c4"), str(tmp_path / "mds"), splits=["train_small", "val_small"],
                      tokenizer=str(tok_dir), concat_tokens=128, limit=60, progress=False)
    assert summary["splits"]["val_small"]["documents"] > 0
    dl = build_mlm_dataloader(local=str(tmp_path / "mds"), remote=None, split="train_small", tokenizer=tok,
                              max_seq_len=128, batch_size=8, mlm_probability=0.3, shuffle=True, seed=0)
    model = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = next(iter(dl))
    losses = []
    for _ in range(4):  # overfit one batch: the whole path is wired correctly if the loss falls
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
