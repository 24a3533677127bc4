"""The structured schema of ``m2bert-retrieval`` (``yamls/retrieval.yaml``), merged in struct mode: an unknown
key or a wrong type stops the run at start-up naming the key, as in the other CLIs."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from m2bert.options import Pooling, RetrievalSchedule, StartKind
from m2bert.train.schema import LoggerConfig


@dataclass
class RecipeConfig:
    """One recipe of ``yamls/retrieval/``: what the original's ``embeddings_train.py`` took as arguments."""

    name: str = MISSING
    max_seq_length: int = MISSING          # tokens per text (queries and documents); at most the model's length
    lr: float = 5e-6
    batch_size: int = 16                   # (query, positive) pairs per step: in-batch negatives
    mini_batch_size: int = 16              # CachedMultipleNegativesRankingLoss's chunk: memory, not the result
    epochs: float = 1.0
    max_steps: int = -1                    # > 0: stop after this many steps (overrides epochs)
    warmup_ratio: float = 0.06
    scheduler: RetrievalSchedule = RetrievalSchedule.linear  # transformers' lr_scheduler_type
    weight_decay: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    max_grad_norm: float = 1.0
    scale: float = 20.0                    # the loss's similarity scale (1 / temperature)
    pooling: Optional[Pooling] = Pooling.mean  # cls | mean; null: the start model's config.pooling
    normalize: Optional[bool] = None       # null: the start model's config.normalize_embeddings (else false)
    no_duplicates: bool = True             # no text twice in a batch (two queries of one document would be
                                           # each other's false negatives)
    eval_batch_size: int = 16


@dataclass
class RetrievalStartConfig:
    kind: StartKind = StartKind.hf         # hf (our HF dir) | composer | original (+ config, tokenizer)
    path: str = MISSING
    config: Optional[str] = None           # original: its config dict (JSON / .pt); composer: an HF dir or config.json
    tokenizer: Optional[str] = None        # default: the HF dir's tokenizer; original: bert-base-uncased
    trust_checkpoint: bool = False
    padding_invariant: bool = True         # true: no padding leaks into real tokens, so batches need no padding
                                           # to the maximum (an original checkpoint reproduces the original: false)


@dataclass
class RetrievalDataConfig:
    folder: str = MISSING                  # BEIR layout written by m2bert-make-retrieval
    max_train_pairs: Optional[int] = None  # the first N training pairs (in query-id order)
    max_eval_queries: Optional[int] = None  # the first N held-out queries; the corpus stays whole


@dataclass
class RetrievalConfig:
    retrieval: RecipeConfig = field(default_factory=RecipeConfig)
    start: RetrievalStartConfig = field(default_factory=RetrievalStartConfig)
    data: RetrievalDataConfig = field(default_factory=RetrievalDataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run_name: str = "${m2bert_retrieval_run_name:${run_root}}"  # default: m2bert-retrieval-<YYYYmmdd-HHMMSS>
    run_root: str = "runs"
    seed: int = 42                         # the original's random_state
    device: str = "auto"                   # auto | cpu | cuda
    precision: str = "auto"                # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16: training and evaluation
    offline: bool = True                   # HF_HUB_OFFLINE=1: nothing is fetched from the hub
    eval_before: bool = True               # evaluate the start model too (the "before" of results.json)
    logging_steps: int = 10


RUN_NAME_RESOLVER = "m2bert_retrieval_run_name"
_generated: dict[str, str] = {}


def generated_run_name(run_root: str) -> str:
    """``m2bert-retrieval-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... if ``<run_root>/<name>`` exists: a new run
    never lands in an earlier one. The same answer for the rest of the process (Hydra's folder and ours agree)."""
    if run_root not in _generated:
        base = "m2bert-retrieval-" + time.strftime("%Y%m%d-%H%M%S")
        name, n = base, 1
        while (Path(run_root) / name).exists():
            n += 1
            name = f"{base}-{n}"
        _generated[run_root] = name
    return _generated[run_root]


def forget_generated_run_name() -> None:
    """After a run: the next run of this process gets a new name."""
    _generated.clear()


def register() -> None:
    if not OmegaConf.has_resolver(RUN_NAME_RESOLVER):
        OmegaConf.register_new_resolver(RUN_NAME_RESOLVER, generated_run_name)
    ConfigStore.instance().store(name="retrieval_schema", node=RetrievalConfig)
