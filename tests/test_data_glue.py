"""GLUE loader on the local GLUE distribution in ../shared: counts, columns, label types, tokenisation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m2bert.data.glue_tasks import GLUE_TASKS, get_task, load_glue_task, metric_fns, tokenize_glue
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def glue_dir() -> Path:
    return shared_path("data", "glue")


@pytest.mark.parametrize(
    ("task", "split", "rows", "columns"),
    [
        ("cola", "validation", 1043, ("sentence",)),
        ("CoLA", "train", 8551, ("sentence",)),
        ("SST-2", "dev", 872, ("sentence",)),
        ("mrpc", "validation", 408, ("sentence1", "sentence2")),
        ("mrpc", "train", 3668, ("sentence1", "sentence2")),
        ("stsb", "validation", 1500, ("sentence1", "sentence2")),
        ("rte", "validation", 277, ("sentence1", "sentence2")),
        ("rte", "train", 2490, ("sentence1", "sentence2")),
        ("qnli", "validation", 5463, ("question", "sentence")),
        ("wnli", "validation", 71, ("sentence1", "sentence2")),
    ],
)
def test_counts_columns_labels(glue_dir: Path, task: str, split: str, rows: int, columns: tuple[str, ...]) -> None:
    ds = load_glue_task(task, glue_dir, split)
    t = get_task(task)
    assert len(ds) == rows
    assert t.text_columns == columns
    assert set(ds.column_names) == {*columns, "label", "idx"}
    assert ds["idx"] == list(range(rows))
    labels = ds["label"]
    if t.is_regression:
        assert all(isinstance(x, float) for x in labels) and 0.0 <= min(labels) and max(labels) <= 5.0
    else:
        assert all(isinstance(x, int) for x in labels) and set(labels) == set(range(t.num_labels))
    assert all(isinstance(ds[0][c], str) and ds[0][c] for c in columns)


def test_known_first_rows(glue_dir: Path) -> None:
    mrpc = load_glue_task("mrpc", glue_dir, "validation")[0]
    assert mrpc["label"] == 1 and mrpc["sentence1"].startswith("He said the foodservice pie business")
    rte = load_glue_task("rte", glue_dir, "validation")[0]
    assert rte["label"] == 1  # not_entailment, as the hub encodes it
    cola = load_glue_task("cola", glue_dir, "validation")
    assert cola[0] == {"sentence": "The sailors rode the breeze clear of the rocks.", "label": 1, "idx": 0}
    assert abs(load_glue_task("stsb", glue_dir, "validation")[0]["label"] - 5.0) < 1e-6


def test_table() -> None:
    assert {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"} <= set(GLUE_TASKS)
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].num_labels == 3
    assert GLUE_TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["cola"].main_metric == "matthews_correlation"
    assert set(GLUE_TASKS["mrpc"].metrics) == {"f1", "accuracy"}
    assert set(GLUE_TASKS["stsb"].metrics) == {"pearson", "spearmanr"}
    fns = metric_fns()
    assert all(m in fns for t in GLUE_TASKS.values() for m in t.metrics)
    assert fns["matthews_correlation"]([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert fns["spearmanr"]([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)


def test_tokenize_pairs(glue_dir: Path) -> None:
    from m2bert.data.tokenizer import load_tokenizer

    tok = load_tokenizer(shared_path("data", "bert-base-uncased", "vocab.txt"))
    ds = tokenize_glue(load_glue_task("mrpc", glue_dir, "validation"), "mrpc", tok, max_length=64)
    row = ds[0]
    assert set(row) == {"input_ids", "attention_mask", "token_type_ids", "labels", "idx"}
    assert row["input_ids"].shape == (64,) and row["input_ids"][0] == 101
    assert row["token_type_ids"].max() == 1  # the second sentence is segment 1
    assert int(row["labels"]) == 1 and int(row["idx"]) == 0
    sts = tokenize_glue(load_glue_task("stsb", glue_dir, "validation"), "stsb", tok)
    assert sts[0]["labels"].dtype == torch.float32


def test_errors(glue_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown GLUE task"):
        get_task("squad")
    with pytest.raises(FileNotFoundError, match=r"QNLI/train\.tsv does not exist"):
        load_glue_task("qnli", glue_dir, "train")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        load_glue_task("cola", tmp_path / "none", "train")
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_glue_task("mnli", glue_dir, "validation")
    with pytest.raises(ValueError, match="exists only locally"):
        load_glue_task("sample-ss", "hf", "train")
