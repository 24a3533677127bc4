"""GLUE tasks as data: one loader for the 9 tasks (and the offline sample's two) from the hub or a local
GLUE folder, tokenised and cached for fine-tuning, with GLUE's metrics.

Both sources give the same thing: a ``datasets.Dataset`` with the Hugging Face ``nyu-mll/glue``
column names (``idx``, the task's text columns, ``label``), the same label encoding
(``ClassLabel``; ``float32`` for STS-B; -1 for unlabelled test rows) and the same split names
(``train``, ``validation``, ``validation_matched``/``validation_mismatched`` for MNLI, ``test``…).
``GLUE_TASKS`` holds each task's metadata for the fine-tuning driver (``m2bert.glue``);
``task_dataset`` and ``pad_collate`` are what its jobs feed the model.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from m2bert.options import ConfigError

log = logging.getLogger(__name__)

HF_GLUE = "nyu-mll/glue"
HF_SOURCES = ("hf", "hub", HF_GLUE, "glue")


@dataclass(frozen=True)
class TsvLayout:
    """How one task's GLUE-distribution TSV is laid out: header or not, where text and label are."""

    header: bool
    text: tuple[str | int, ...]  # header names, or column positions when header=False
    label: str | int | None  # None for unlabelled files
    unlabelled_text: tuple[str | int, ...] | None = None  # test.tsv columns where they differ


@dataclass(frozen=True)
class GlueTask:
    """Metadata of one task, shared by both sources and the fine-tuning driver."""

    name: str  # our key, e.g. "mnli"
    dir_name: str  # folder in the GLUE distribution, e.g. "MNLI"
    hf_config: str | None  # nyu-mll/glue config; None for tasks only available locally
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None  # None for regression
    metrics: tuple[str, ...]  # GLUE's metrics for the task, main one first (all are reported)
    splits: dict[str, str]  # split name -> TSV file name
    layout: TsvLayout
    label_map: dict[str, int] | None = None  # TSV label string -> id, where the TSV stores names
    eval_splits: tuple[str, ...] = ("validation",)
    main_metric: str = field(default="")
    # The metrics the task's score averages: the paper's set (HazyResearch/m2 finetuning_jobs.py), which is
    # narrower than GLUE's reporting set for MRPC (F1 only) and STS-B (Spearman only).
    score_metrics: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2


_STD_SPLITS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_ENT2 = ("entailment", "not_entailment")


def _task(name: str, dir_name: str, hf: str | None, text: tuple[str, ...], labels: tuple[str, ...] | None,
          metrics: tuple[str, ...], layout: TsvLayout, label_map: dict[str, int] | None = None,
          splits: dict[str, str] | None = None, eval_splits: tuple[str, ...] = ("validation",),
          score: tuple[str, ...] | None = None) -> GlueTask:
    return GlueTask(name, dir_name, hf, text, labels, metrics, splits or dict(_STD_SPLITS), layout, label_map,
                    eval_splits, metrics[0], score or metrics[:1])


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        _task("cola", "CoLA", "cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",),
              TsvLayout(False, (3,), 1, unlabelled_text=("sentence",))),
        _task("sst2", "SST-2", "sst2", ("sentence",), ("negative", "positive"), ("accuracy",),
              TsvLayout(True, ("sentence",), "label")),
        _task("mrpc", "MRPC", "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
              ("f1", "accuracy"), TsvLayout(True, ("#1 String", "#2 String"), "Quality"), score=("f1",)),
        _task("qqp", "QQP", "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"),
              TsvLayout(True, ("question1", "question2"), "is_duplicate"), score=("accuracy", "f1")),
        _task("stsb", "STS-B", "stsb", ("sentence1", "sentence2"), None, ("pearson", "spearmanr"),
              TsvLayout(True, ("sentence1", "sentence2"), "score"), score=("spearmanr",)),
        _task("mnli", "MNLI", "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
              ("accuracy",), TsvLayout(True, ("sentence1", "sentence2"), "gold_label"),
              label_map={"entailment": 0, "neutral": 1, "contradiction": 2},
              splits={"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                      "validation_mismatched": "dev_mismatched.tsv", "test_matched": "test_matched.tsv",
                      "test_mismatched": "test_mismatched.tsv"},
              eval_splits=("validation_matched", "validation_mismatched")),
        _task("qnli", "QNLI", "qnli", ("question", "sentence"), _ENT2, ("accuracy",),
              TsvLayout(True, ("question", "sentence"), "label"), label_map={"entailment": 0, "not_entailment": 1}),
        _task("rte", "RTE", "rte", ("sentence1", "sentence2"), _ENT2, ("accuracy",),
              TsvLayout(True, ("sentence1", "sentence2"), "label"), label_map={"entailment": 0, "not_entailment": 1}),
        _task("wnli", "WNLI", "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",),
              TsvLayout(True, ("sentence1", "sentence2"), "label")),
        # The offline sample's derived tasks (m2bert.data.sample), laid out like GLUE folders.
        _task("sample-ss", "SAMPLE-SS", None, ("sentence",), ("shuffled", "original"),
              ("matthews_correlation", "accuracy"), TsvLayout(True, ("sentence",), "label")),
        _task("sample-pair", "SAMPLE-PAIR", None, ("sentence1", "sentence2"), ("different", "same"),
              ("f1", "accuracy"), TsvLayout(True, ("sentence1", "sentence2"), "label")),
    ]
}
# MNLI's local files name the columns sentence1/sentence2; the hub calls them premise/hypothesis.
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli", "sampless": "sample-ss",
            "samplepair": "sample-pair"}
_SPLIT_ALIASES = {"dev": "validation", "val": "validation", "dev_matched": "validation_matched",
                  "dev_mismatched": "validation_mismatched"}


def get_task(task: str) -> GlueTask:
    """Look up a task by our key, its GLUE folder name or hub config (case-insensitive)."""
    key = task.lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        key2 = key.replace("-", "")
        key = _ALIASES.get(key2, key2)
    if key not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def _features(t: GlueTask) -> datasets.Features:
    feats: dict[str, Any] = {c: datasets.Value("string") for c in t.text_columns}
    feats["label"] = datasets.Value("float32") if t.is_regression else datasets.ClassLabel(names=list(t.label_names))
    feats["idx"] = datasets.Value("int32")
    return datasets.Features(feats)


STSB_RANGE = (0.0, 5.0)  # STS-B similarity scores


# Labels are parsed strictly, as GLUE writes them: Python's int() and float() also take " 1 ", "١" (an
# Arabic-Indic one), "1_0", "nan" and "1e0", which would turn a damaged file into silently wrong labels.
_CLASS_ID = re.compile(r"[0-9]+")
_SCORE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # a sign only so that "-0.5" reads as out of range


def _label_rule(t: GlueTask) -> str:
    if t.is_regression:
        return (f"scores must be decimal numbers in [{STSB_RANGE[0]:g}, {STSB_RANGE[1]:g}] written with ASCII "
                f"digits (e.g. 3.8)")
    if t.label_map is not None:
        return f"labels must be one of {sorted(t.label_map)}, exactly"
    return f"labels must be integers in [0, {t.num_labels - 1}] written with ASCII digits"


def parse_label(raw: str, t: GlueTask) -> tuple[float | int | None, bool]:
    """``(value, in range)`` of one TSV label, or ``(None, False)`` when it is not written as ``t``'s labels are."""
    if t.is_regression:
        if not _SCORE.fullmatch(raw):
            return None, False
        score = float(raw)
        return score, STSB_RANGE[0] <= score <= STSB_RANGE[1]
    if t.label_map is not None:
        return (t.label_map[raw], True) if raw in t.label_map else (None, False)
    if not _CLASS_ID.fullmatch(raw):
        return None, False
    value = int(raw)
    return value, value < t.num_labels


def validate_task_files(source: str | os.PathLike[str], task: str, splits: tuple[str, ...]) -> None:
    """Parse every labelled row of a local task's files (labels in range, scores finite and in range);
    a bad row, or a file without rows, raises ValueError naming the file — before any job trains."""
    t = get_task(task)
    for split in splits:
        path = Path(source).expanduser() / t.dir_name / t.splits[split]
        if not _read_tsv(path, t, labelled=True)["label"]:
            raise ValueError(f"{path} holds no rows{' (only a header)' if t.layout.header else ''}: "
                             f"{t.name} {split} needs at least one")


def _read_tsv(path: Path, t: GlueTask, labelled: bool) -> dict[str, list[Any]]:
    """Parse a GLUE TSV by splitting on tabs (GLUE text holds bare quotes, so no CSV quoting)."""
    with open(path, encoding="utf-8-sig", newline="\n") as fh:
        lines = [ln.rstrip("\n").rstrip("\r") for ln in fh]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ValueError(f"{path} is empty: {t.name} needs a header and at least one row")
    layout = t.layout
    if layout.header or not labelled:
        header = lines[0].split("\t")
        rows = lines[1:]
        first_data_line = 2
    else:
        header, rows, first_data_line = [], lines, 1
    text_cols = layout.text if labelled else (layout.unlabelled_text or layout.text)

    def col(ref: str | int, what: str) -> int:
        if isinstance(ref, int):
            return ref
        if ref not in header:
            raise ValueError(f"{path}: no {what} column {ref!r} in header {header}")
        return header.index(ref)

    text_idx = [col(c, "text") for c in text_cols]
    label_idx = col(layout.label, "label") if labelled and layout.label is not None else None
    out: dict[str, list[Any]] = {c: [] for c in t.text_columns}
    out["label"], out["idx"] = [], []
    needed = max(text_idx + ([label_idx] if label_idx is not None else [])) + 1
    for i, line in enumerate(rows):
        parts = line.split("\t")
        if len(parts) < needed:
            raise ValueError(f"{path} line {i + first_data_line}: {len(parts)} tab-separated fields, need {needed}")
        for c, j in zip(t.text_columns, text_idx):
            out[c].append(parts[j])
        if label_idx is None:
            out["label"].append(-1.0 if t.is_regression else -1)
        else:
            raw = parts[label_idx]
            value, ok = parse_label(raw, t)
            if value is None:
                raise ValueError(f"{path} line {i + first_data_line}: bad label {raw!r} for {t.name}; "
                                 f"{_label_rule(t)}")
            if not ok:
                raise ValueError(f"{path} line {i + first_data_line}: label {raw!r} is out of range for {t.name}; "
                                 f"{_label_rule(t)}")
            out["label"].append(value)
        out["idx"].append(i)
    return out


def load_glue_task(task: str, source: str | os.PathLike[str] = "hf", split: str = "train") -> datasets.Dataset:
    """Load one split of one task as a ``datasets.Dataset`` with columns ``idx``, text column(s), ``label``.

    ``source`` is ``"hf"`` (the hub's ``nyu-mll/glue``; needs network) or a local folder in the GLUE
    distribution layout (``<dir>/<TASK>/train.tsv``, ``dev.tsv``, ``dev_matched.tsv``, …).
    ``split`` takes the hub's names; ``dev``/``dev_matched``/``dev_mismatched`` are accepted too.
    """
    t = get_task(task)
    split = _SPLIT_ALIASES.get(split, split)
    if split not in t.splits:
        raise ValueError(f"{t.name} has no split {split!r}; splits: {sorted(t.splits)}")
    if str(source) in HF_SOURCES:
        if t.hf_config is None:
            raise ValueError(f"{t.name} exists only locally (make it with m2bert-make-sample --out DIR); pass data.source=DIR/glue")
        try:
            ds = datasets.load_dataset(HF_GLUE, t.hf_config, split=split)
        except OSError as e:  # ConnectionError: offline (HF_HUB_OFFLINE=1, nothing cached) or the hub unreachable
            raise ConfigError(f"data.source={source}: could not load {HF_GLUE} ({t.hf_config}, {split}) from the "
                              f"Hugging Face hub ({str(e).strip().splitlines()[0]}); without network, pass "
                              f"data.source=<a folder of GLUE's TSVs: <TASK>/train.tsv, dev.tsv>") from e
        if t.name == "stsb":
            ds = ds.cast_column("label", datasets.Value("float32"))
        return ds.select_columns([*t.text_columns, "label", "idx"])
    root = Path(source).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"GLUE folder {root} does not exist")
    path = root / t.dir_name / t.splits[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist ({t.name} split {split!r})")
    labelled = not split.startswith("test")
    data = _read_tsv(path, t, labelled)
    feats = _features(t)
    if not labelled and not t.is_regression:
        feats["label"] = datasets.Value("int64")  # -1: as the hub stores unlabelled test rows
    return datasets.Dataset.from_dict(data, features=feats)


def tokenize_glue(dataset: datasets.Dataset, task: str, tokenizer: PreTrainedTokenizerBase, max_length: int = 128,
                  padding: str | bool = "max_length", keep_text: bool = False) -> datasets.Dataset:
    """Tokenise single sentences or pairs (truncated to ``max_length``); keeps ``idx`` and ``labels``.

    Output columns: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``, ``idx``
    (plus the text columns if ``keep_text``), formatted as torch tensors.
    """
    t = get_task(task)
    cols = list(t.text_columns)

    def enc(batch: dict[str, list[Any]]) -> dict[str, Any]:
        args: list[Any] = [batch[cols[0]]] + ([batch[cols[1]]] if t.is_pair else [])
        out = tokenizer(*args, truncation=True, max_length=max_length, padding=padding, return_token_type_ids=True)
        out["labels"] = batch["label"]
        return dict(out)

    remove = [c for c in dataset.column_names if c not in ("idx",) and (c == "label" or not keep_text)]
    ds = dataset.map(enc, batched=True, remove_columns=remove, load_from_cache_file=False, desc=None)
    ds.set_format("torch", columns=["input_ids", "attention_mask", "token_type_ids", "labels", "idx"],
                  output_all_columns=keep_text)
    return ds


def metric_fns() -> dict[str, Callable[[Any, Any], float]]:
    """GLUE's metrics as plain functions of (predictions, references) — no extra dependencies."""
    import numpy as np

    def accuracy(p: Any, r: Any) -> float:
        return float((np.asarray(p) == np.asarray(r)).mean())

    def f1(p: Any, r: Any) -> float:
        p, r = np.asarray(p), np.asarray(r)
        tp = float(((p == 1) & (r == 1)).sum())
        fp, fn = float(((p == 1) & (r == 0)).sum()), float(((p == 0) & (r == 1)).sum())
        return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)

    def matthews(p: Any, r: Any) -> float:
        p, r = np.asarray(p), np.asarray(r)
        tp, tn = float(((p == 1) & (r == 1)).sum()), float(((p == 0) & (r == 0)).sum())
        fp, fn = float(((p == 1) & (r == 0)).sum()), float(((p == 0) & (r == 1)).sum())
        den = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
        return 0.0 if den == 0 else (tp * tn - fp * fn) / den

    def pearson(p: Any, r: Any) -> float:
        return float(np.corrcoef(np.asarray(p, float), np.asarray(r, float))[0, 1])

    def spearman(p: Any, r: Any) -> float:
        def rank(x: Any) -> Any:
            x = np.asarray(x, float)
            order = x.argsort(kind="stable")
            ranks = np.empty(len(x))
            ranks[order] = np.arange(len(x))
            for v in np.unique(x):  # average ranks of ties
                m = x == v
                ranks[m] = ranks[m].mean()
            return ranks

        return pearson(rank(p), rank(r))

    return {"accuracy": accuracy, "f1": f1, "matthews_correlation": matthews, "pearson": pearson,
            "spearmanr": spearman}


# ----------------------------------------------------------------------------- fine-tuning inputs

# Tokenisers and tokenised splits, reused by later seeds (and later Hydra sweep jobs) in the same process.
_TOKENIZERS: dict[str, PreTrainedTokenizerBase] = {}
_DATASETS: dict[tuple[Any, ...], datasets.Dataset] = {}


def cached_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """``load_tokenizer(spec)``, loaded once per process."""
    from m2bert.data.tokenizer import load_tokenizer

    if spec not in _TOKENIZERS:
        _TOKENIZERS[spec] = load_tokenizer(spec)
    return _TOKENIZERS[spec]


def task_dataset(task: str, source: str, split: str, tokenizer_spec: str, max_seq_len: int,
                 subset: int | None, shuffle_subset: bool, pad_to_max_length: bool = True) -> datasets.Dataset:
    """A tokenised split (cached). Train subsets take N rows of a fixed shuffle (seed 0), the same for
    every seed, so subsets keep the label mix; eval subsets take the first N rows."""
    datasets.disable_progress_bars()
    key = (task, str(source), split, tokenizer_spec, max_seq_len, subset, pad_to_max_length)
    if key not in _DATASETS:
        ds = load_glue_task(task, source, split)
        if subset is not None and subset < len(ds):
            ds = ds.shuffle(seed=0).select(range(subset)) if shuffle_subset else ds.select(range(subset))
        _DATASETS[key] = tokenize_glue(ds, task, cached_tokenizer(tokenizer_spec), max_length=max_seq_len,
                                       padding="max_length" if pad_to_max_length else False)
    return _DATASETS[key]


def pad_collate(pad_id: int) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Collate unpadded rows by padding to the batch's longest (only for padding-invariant models:
    the original pads every row to max_seq_len, and its outputs depend on the padding)."""

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(r["input_ids"]) for r in rows)
        out: dict[str, torch.Tensor] = {}
        for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
            out[key] = torch.stack([torch.nn.functional.pad(torch.as_tensor(r[key]), (0, n - len(r[key])), value=fill)
                                    for r in rows])
        out["labels"] = torch.stack([torch.as_tensor(r["labels"]) for r in rows])
        out["idx"] = torch.stack([torch.as_tensor(r["idx"]) for r in rows])
        return out

    return collate
