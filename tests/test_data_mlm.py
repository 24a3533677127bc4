"""MLM collator statistics and determinism; the streaming loader over both shard modes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from m2bert.data.convert_c4 import convert
from m2bert.data.mlm import IGNORE_INDEX, MLMCollator, build_mlm_dataloader, build_mlm_dataset
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def tok():
    from m2bert.data.tokenizer import load_tokenizer

    return load_tokenizer(shared_path("data", "bert-base-uncased", "vocab.txt"))


@pytest.fixture(scope="module", autouse=True)
def _clean_shm() -> None:
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()


def _rows(tok, n_rows: int = 80, length: int = 128, seed: int = 0) -> list[dict]:
    """Rows like the loader's: [CLS] … [SEP] with some padding at the end of odd rows."""
    g = np.random.default_rng(seed)
    rows = []
    for i in range(n_rows):
        n_real = length - (17 if i % 2 else 0)
        ids = g.integers(1000, len(tok), n_real)
        ids[0], ids[-1] = tok.cls_token_id, tok.sep_token_id
        if n_real > 60:
            ids[60] = tok.sep_token_id
        pad = np.full(length - n_real, tok.pad_token_id)
        rows.append({"input_ids": np.concatenate([ids, pad]),
                     "attention_mask": np.concatenate([np.ones(n_real, int), np.zeros(length - n_real, int)]),
                     "token_type_ids": np.zeros(length, int)})
    return rows


@pytest.mark.parametrize("p", [0.15, 0.30])
def test_masking_rate_and_split(tok, p: float) -> None:
    rows = _rows(tok, n_rows=100)  # 12,800 positions, > 10k real tokens
    batch = MLMCollator(tok, mlm_probability=p, seed=1)(rows)
    orig = torch.stack([torch.as_tensor(r["input_ids"]) for r in rows])
    special = torch.isin(orig, torch.tensor(tok.all_special_ids)) | (batch["attention_mask"] == 0)
    maskable = int((~special).sum())
    assert maskable > 10_000
    picked = batch["labels"] != IGNORE_INDEX
    assert abs(picked.sum().item() / maskable - p) < 0.02
    assert not (picked & special).any(), "special or padding tokens were masked"
    assert torch.equal(batch["labels"][picked], orig[picked])
    assert torch.equal(batch["input_ids"][~picked], orig[~picked])
    n = picked.sum().item()
    is_mask = (batch["input_ids"] == tok.mask_token_id) & picked
    is_same = (batch["input_ids"] == orig) & picked
    is_rand = picked & ~is_mask & ~is_same
    assert abs(is_mask.sum().item() / n - 0.8) < 0.03
    assert abs(is_rand.sum().item() / n - 0.1) < 0.03
    assert abs(is_same.sum().item() / n - 0.1) < 0.03
    assert not torch.isin(batch["input_ids"][is_rand], torch.tensor(tok.all_special_ids)).any()
    for k in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert batch[k].dtype == torch.int64 and batch[k].shape == orig.shape


def test_same_seed_same_masks(tok) -> None:
    rows = _rows(tok, 16)
    a, b = MLMCollator(tok, 0.3, seed=7)(rows), MLMCollator(tok, 0.3, seed=7)(rows)
    c = MLMCollator(tok, 0.3, seed=8)(rows)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["labels"], c["labels"])
    # With sample ids, masks depend on (seed, epoch, sample) only — not on batch composition.
    tagged = [dict(r, sample_idx=i, epoch=0) for i, r in enumerate(rows)]
    full = MLMCollator(tok, 0.3, seed=7)(tagged)
    half = MLMCollator(tok, 0.3, seed=7)(tagged[8:])
    assert torch.equal(full["labels"][8:], half["labels"])
    other_epoch = MLMCollator(tok, 0.3, seed=7)([dict(r, epoch=1) for r in tagged])
    assert not torch.equal(full["labels"], other_epoch["labels"])


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    c4 = shared_path("data", "c4", "c4_sample.jsonl")
    vocab = shared_path("data", "bert-base-uncased", "vocab.txt")
    root = tmp_path_factory.mktemp("mds")
    convert(str(c4), str(root / "raw"), splits=["train"], limit=150, progress=False)
    convert(str(c4), str(root / "tok"), splits=["train"], tokenizer=str(vocab), concat_tokens=128, limit=150,
            progress=False)
    return {"raw": root / "raw", "tok": root / "tok"}


def _first_batches(root: Path, tok, n: int, seed: int = 3, **kw) -> list[dict]:
    dl = build_mlm_dataloader(local=str(root), remote=None, split="train", tokenizer=tok, max_seq_len=128,
                              batch_size=8, mlm_probability=0.3, shuffle=True, seed=seed, **kw)
    out = []
    for b in dl:
        out.append(b)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("mode", ["raw", "tok"])
def test_loader_batches(shards: dict[str, Path], tok, mode: str) -> None:
    batches = _first_batches(shards[mode], tok, 3)
    for b in batches:
        assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        for v in b.values():
            assert v.dtype == torch.int64 and v.shape == (8, 128)
        assert (b["input_ids"][:, 0] == tok.cls_token_id).all()
        rate = (b["labels"] != IGNORE_INDEX).sum() / b["attention_mask"].sum()
        assert 0.2 < rate.item() < 0.4
    again = _first_batches(shards[mode], tok, 3)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(batches, again) for k in x)
    other = _first_batches(shards[mode], tok, 1, seed=4)
    assert not torch.equal(other[0]["input_ids"], batches[0]["input_ids"])


def test_loader_with_worker_matches_in_process(shards: dict[str, Path], tok) -> None:
    a = _first_batches(shards["tok"], tok, 2)
    b = _first_batches(shards["tok"], tok, 2, num_workers=1)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_detects_modes_and_validates(shards: dict[str, Path], tok, tmp_path: Path) -> None:
    assert build_mlm_dataset(local=str(shards["raw"]), remote=None, split="train", tokenizer=tok
                             ).shard_format.mode == "text"
    assert build_mlm_dataset(local=str(shards["tok"]), remote=None, split="train", tokenizer=tok
                             ).shard_format.mode == "tokens"
    with pytest.raises(ValueError, match="rows are 128 tokens, but max_seq_len=64"):
        build_mlm_dataset(local=str(shards["tok"]), remote=None, split="train", tokenizer=tok, max_seq_len=64)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        build_mlm_dataloader(local=str(tmp_path / "missing"), remote=None, split="train", tokenizer=tok,
                             max_seq_len=128, batch_size=2, mlm_probability=0.15, shuffle=False, seed=0)
    (tmp_path / "half" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="index.json is missing"):
        build_mlm_dataloader(local=str(tmp_path / "half"), remote=None, split="train", tokenizer=tok,
                             max_seq_len=128, batch_size=2, mlm_probability=0.15, shuffle=False, seed=0)
    with pytest.raises(FileNotFoundError, match="remote index .*nowhere"):
        build_mlm_dataloader(local=str(tmp_path / "cache"), remote=str(tmp_path / "nowhere"), split="train",
                             tokenizer=tok, max_seq_len=128, batch_size=2, mlm_probability=0.15, shuffle=False, seed=0)


def test_remote_plus_local_cache(shards: dict[str, Path], tok, tmp_path: Path) -> None:
    """A local folder as the 'remote' exercises the download-to-cache path without network."""
    b = _first_batches_remote(shards["tok"], tmp_path / "cache", tok)
    assert b["input_ids"].shape == (8, 128)
    assert (tmp_path / "cache" / "train" / "index.json").is_file()


def _first_batches_remote(remote: Path, cache: Path, tok) -> dict:
    dl = build_mlm_dataloader(local=str(cache), remote=str(remote), split="train", tokenizer=tok, max_seq_len=128,
                              batch_size=8, mlm_probability=0.15, shuffle=False, seed=0)
    return next(iter(dl))


def test_raw_fast_path_equals_full_tokenisation(shards: dict[str, Path], tok) -> None:
    ds = build_mlm_dataset(local=str(shards["raw"]), remote=None, split="train", tokenizer=tok)
    for i in range(0, 150, 10):
        text = super(type(ds), ds).get_item(i)["text"]
        full = tok(text, truncation=True, max_length=128, padding="max_length")["input_ids"]
        assert ds[i]["input_ids"].tolist() == full


def test_resumption_state_is_the_datasets(shards: dict[str, Path], tok) -> None:
    dl = build_mlm_dataloader(local=str(shards["tok"]), remote=None, split="train", tokenizer=tok, max_seq_len=128,
                              batch_size=4, mlm_probability=0.3, shuffle=True, seed=5)
    it = iter(dl)
    seen = [next(it) for _ in range(3)]
    state = dl.state_dict()
    rest = next(it)
    del it
    dl2 = build_mlm_dataloader(local=str(shards["tok"]), remote=None, split="train", tokenizer=tok,
                               max_seq_len=128, batch_size=4, mlm_probability=0.3, shuffle=True, seed=5)
    dl2.load_state_dict(state)
    resumed = next(iter(dl2))
    assert len(seen) == 3
    assert all(torch.equal(resumed[k], rest[k]) for k in rest)
