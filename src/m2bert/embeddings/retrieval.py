"""Retrieval fine-tuning of a pretrained M2-BERT (the original's 2k/8k/32k retrieval models), without padding every
input to the maximum length.

The start model (our HF directory, our Composer checkpoint, or an original checkpoint + its config) becomes a
sentence-transformers model (Transformer → Pooling → [Normalize]) trained with SentenceTransformerTrainer and
CachedMultipleNegativesRankingLoss on (query, positive document) pairs with in-batch negatives, as the original's
``embeddings_train.py``. It is evaluated with InformationRetrievalEvaluator (nDCG@10, MRR@10, recall@k,
accuracy@k) on the held-out queries over the whole corpus before and after. Everything lands in a new run folder
``<run_root>/<run_name>``: ``results.json`` and the exported model in ``model/`` (both atomic), the start model as
an HF directory in ``start/``.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from m2bert.atomic import atomic_directory, atomic_write_json
from m2bert.options import ConfigError, loggable, unknown_keys
from m2bert.run_folder import RunFolder, check_run_name, claimed

log = logging.getLogger("m2bert.retrieval")

CUTOFFS = [1, 3, 5, 10, 100]


def check_config(cfg: DictConfig) -> None:
    """Every value-level check (the schema already checked keys and types), before anything heavy."""
    from m2bert.cli import check_missing
    from m2bert.embeddings.schema import RetrievalConfig

    unknown = unknown_keys(cfg, RetrievalConfig)
    if unknown:
        raise ConfigError(f"{'; '.join(unknown)}: no such retrieval setting; the settings and their values: "
                          "m2bert-retrieval --cfg job")
    check_missing(cfg)
    check_run_name(cfg.run_name)
    r = cfg.retrieval
    for key in ("max_seq_length", "batch_size", "mini_batch_size", "eval_batch_size"):
        if r[key] <= 0:
            raise ConfigError(f"retrieval.{key}={r[key]} must be > 0")
    if r.lr <= 0 or r.epochs <= 0 or r.scale <= 0:
        raise ConfigError("retrieval.lr, retrieval.epochs and retrieval.scale must be > 0")
    if not 0.0 <= r.warmup_ratio < 1.0:
        raise ConfigError(f"retrieval.warmup_ratio={r.warmup_ratio} must be in [0, 1)")
    if len(r.betas) != 2 or not all(0.0 <= b < 1.0 for b in r.betas):
        raise ConfigError(f"retrieval.betas={list(r.betas)} must be two numbers in [0, 1), e.g. [0.9,0.98]")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r}; choose auto, cpu or cuda")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision={cfg.precision!r}; choose auto, fp32 or bf16")
    if cfg.logger.name not in ("console", "wandb"):
        raise ConfigError(f"logger.name={cfg.logger.name!r}; choose console or wandb")
    for key in ("max_train_pairs", "max_eval_queries"):
        if cfg.data[key] is not None and cfg.data[key] <= 0:
            raise ConfigError(f"data.{key}={cfg.data[key]} must be > 0 (or null: all)")


def run_folder(cfg: DictConfig) -> RunFolder:
    """``<run_root>/<run_name>``: refused if an earlier run left anything there (a run is never overwritten); the
    Hydra callback (yamls/retrieval.yaml) claims it before Hydra writes there."""
    return RunFolder(Path(cfg.run_root) / check_run_name(cfg.run_name), overwrite=None,
                     other="choose another run_name= (or leave it unset: m2bert-retrieval-<date-time>)")


def start_model_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """The start model as our HF directory in ``run_dir/start`` (the encoder and its tokenizer), whatever kind it
    came as; ``start.padding_invariant`` decides whether padding may leak into real tokens."""
    import torch

    from m2bert import M2BertModel
    from m2bert.data.tokenizer import load_configured_tokenizer, set_model_max_length
    from m2bert.config import max_input_length
    from m2bert.glue.start import is_m2, resolve_start
    from m2bert.train.checkpoint_safety import check_shapes

    start = resolve_start(str(cfg.start.kind), cfg.start.path, cfg.start.config, cfg.start.tokenizer,
                          trust=cfg.start.trust_checkpoint)
    if not is_m2(start.config):
        raise ConfigError(f"start: {start.path} is a {start.config.model_type} model; m2bert-retrieval fine-tunes "
                          "M2-BERT")
    limit = max_input_length(start.config)
    if cfg.retrieval.max_seq_length > limit:
        raise ConfigError(f"retrieval.max_seq_length={cfg.retrieval.max_seq_length} exceeds what {start.path} takes "
                          f"({limit} tokens: max_position_embeddings / long_conv_l_max); set "
                          f"retrieval.max_seq_length<={limit} or start from a model pretrained at that length")
    tokenizer = load_configured_tokenizer("start.tokenizer", start.tokenizer)
    config = start.config.__class__.from_dict({**start.config.to_dict(), "padding_invariant": cfg.start.padding_invariant})
    model = M2BertModel(config)
    encoder = {k[len("bert."):]: v for k, v in start.state.items() if k.startswith("bert.")}
    check_shapes(encoder, model.state_dict(), f"start: {start.path}")
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ConfigError(f"start: {start.path} does not fit the encoder (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    out = run_dir / "start"
    with atomic_directory(out) as tmp:
        model.to(torch.float32).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        set_model_max_length(tmp, limit)
    return out


def load_data(cfg: DictConfig) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str], dict[str, set[str]]]:
    """Training pairs, and the evaluation's queries, corpus (all documents) and relevant documents."""
    from m2bert.embeddings.retrieval_data import read_retrieval_set

    try:
        rs = read_retrieval_set(cfg.data.folder)
    except ValueError as e:
        raise ConfigError(f"data.folder: {e}") from e
    pairs = rs.train_pairs()[: cfg.data.max_train_pairs]
    eval_ids = sorted(rs.test_qrels)[: cfg.data.max_eval_queries]
    if not pairs or not eval_ids:
        raise ConfigError(f"data.folder={cfg.data.folder} has no training pairs or no held-out queries")
    queries = {q: rs.queries[q] for q in eval_ids}
    relevant = {q: {rs.test_qrels[q]} for q in eval_ids}
    return pairs, queries, rs.corpus, relevant


def truncation(tokenizer: Any, texts: list[str], max_seq_length: int) -> dict[str, Any]:
    """How many of ``texts`` are longer than ``max_seq_length`` tokens (special tokens included, as the model sees
    them), so sentence-transformers cuts them, and by how much: the cut texts' median and longest length, and the
    share of all their tokens that never reach the model."""
    import statistics

    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False,
                                             verbose=False)["input_ids"]]
    cut = sorted(n for n in lengths if n > max_seq_length)
    total = sum(lengths)
    return {"texts": len(lengths), "cut": len(cut), "max_seq_length": max_seq_length,
            "median_tokens": statistics.median(lengths) if lengths else None,
            "median_tokens_cut": statistics.median(cut) if cut else None, "max_tokens": max(lengths, default=None),
            "tokens_dropped": round(sum(n - max_seq_length for n in cut) / total, 4) if total else 0.0}


def report_truncation(tokenizer: Any, texts: dict[str, list[str]], max_seq_length: int, limit: int) -> dict[str, Any]:
    """:func:`truncation` of each kind of text (documents, queries), logged once per kind that is cut: silent
    truncation of long documents is the first thing a retrieval score hides."""
    stats = {kind: truncation(tokenizer, items, max_seq_length) for kind, items in texts.items()}
    fix = (f"raise retrieval.max_seq_length (up to {limit}, this model's length) to keep them" if max_seq_length < limit
           else f"this model takes at most {limit}: start from one pretrained longer to keep them "
                "(e.g. model=m2_bert_base_80m_2k)")
    for kind, stat in stats.items():
        if stat["cut"]:
            log.warning("%d of %d %s longer than %d tokens were cut (their median %g tokens, max %d; %.0f%% of the "
                        "%s' tokens dropped); %s", stat["cut"], stat["texts"], kind, max_seq_length,
                        stat["median_tokens_cut"], stat["max_tokens"], 100 * stat["tokens_dropped"], kind, fix)
    return stats


def evaluate(model: Any, queries: dict[str, str], corpus: dict[str, str], relevant: dict[str, set[str]],
             batch_size: int, bf16: bool = False) -> dict[str, float]:
    """nDCG@10, MRR@10, MAP@100, recall@k and accuracy@k (cosine similarity), keys without the evaluator's prefix;
    ``bf16``: the embeddings under bf16 autocast, as the run trains (``precision``)."""
    import torch
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    evaluator = InformationRetrievalEvaluator(
        queries, corpus, relevant, mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=CUTOFFS,
        precision_recall_at_k=CUTOFFS, map_at_k=[100], batch_size=batch_size, name="retrieval", write_csv=False,
        show_progress_bar=False)
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
        scores = evaluator(model)
    return {k.split("retrieval_cosine_", 1)[-1]: float(v) for k, v in scores.items() if "cosine_" in k}


def _device(cfg: DictConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible; use device=auto or cpu")
    return str(cfg.device)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Check, claim the run folder, build, evaluate, fine-tune, evaluate, export; returns what ``results.json``
    holds."""
    check_config(cfg)
    if cfg.offline:
        tok = cfg.start.tokenizer
        if tok is None and str(cfg.start.kind) == "original":
            raise ConfigError("start.kind=original needs start.tokenizer=<local folder or vocab.txt> with offline=true "
                              "(the original used bert-base-uncased's vocab.txt)")
        if tok and not Path(str(tok)).expanduser().exists():
            raise ConfigError(f"start.tokenizer={tok} is not a local file or folder and offline=true: give a local "
                              "tokenizer folder or vocab.txt (or offline=false to fetch it from the hub)")
        # Every path is local; the variables also keep anything started from here (workers, W&B) off the hub.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    if not Path(cfg.data.folder).is_dir():
        raise ConfigError(f"data.folder={cfg.data.folder} does not exist: write it with "
                          f"m2bert-make-retrieval --shared ../shared --out {cfg.data.folder}")
    folder = run_folder(cfg)
    with claimed(folder):
        return finetune(cfg, folder.path)


def finetune(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Everything after the checks, in the claimed run folder."""
    pairs, queries, corpus, relevant = load_data(cfg)
    start_dir = start_model_dir(cfg, run_dir)

    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss
    from transformers import set_seed

    from m2bert.config import max_input_length
    from m2bert.embeddings.schema import forget_generated_run_name
    from m2bert.embeddings.sentence_transformers import build_sentence_transformer, save_sentence_transformer

    r = cfg.retrieval
    device = _device(cfg)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device == "cuda")
    set_seed(cfg.seed)
    model = build_sentence_transformer(start_dir, max_seq_length=r.max_seq_length, pooling=None if r.pooling is None else str(r.pooling),
                                       normalize=r.normalize, device=device)
    train_queries = list(dict.fromkeys(q for q, _ in pairs))
    cut = report_truncation(model.tokenizer, {"documents": list(corpus.values()),
                                              "queries": train_queries + list(queries.values())},
                            r.max_seq_length, max_input_length(model[0].auto_model.config))
    before = evaluate(model, queries, corpus, relevant, r.eval_batch_size, bf16) if cfg.eval_before else None
    if before:
        log.info("before: nDCG@10 %.4f  MRR@10 %.4f  recall@10 %.4f", before["ndcg@10"], before["mrr@10"],
                 before["recall@10"])

    if cfg.logger.name == "wandb":
        for env, value in (("WANDB_PROJECT", cfg.logger.project), ("WANDB_ENTITY", cfg.logger.entity),
                           ("WANDB_MODE", cfg.logger.mode)):
            if value:
                os.environ[env] = str(value)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(run_dir / "trainer"), run_name=cfg.run_name, seed=cfg.seed, data_seed=cfg.seed,
        num_train_epochs=r.epochs, max_steps=r.max_steps, per_device_train_batch_size=r.batch_size,
        learning_rate=r.lr, lr_scheduler_type=str(r.scheduler), warmup_ratio=r.warmup_ratio, weight_decay=r.weight_decay,
        adam_beta1=r.betas[0], adam_beta2=r.betas[1], adam_epsilon=r.eps, max_grad_norm=r.max_grad_norm,
        bf16=bf16, use_cpu=device == "cpu", batch_sampler="no_duplicates" if r.no_duplicates else "batch_sampler",
        eval_strategy="no", save_strategy="no", logging_steps=cfg.logging_steps, disable_tqdm=True,
        report_to=["wandb"] if cfg.logger.name == "wandb" else "none", dataloader_num_workers=0)
    train = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    loss = CachedMultipleNegativesRankingLoss(model, scale=r.scale, mini_batch_size=r.mini_batch_size)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
    t0 = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - t0
    model.eval()
    after = evaluate(model, queries, corpus, relevant, r.eval_batch_size, bf16)
    log.info("after:  nDCG@10 %.4f  MRR@10 %.4f  recall@10 %.4f", after["ndcg@10"], after["mrr@10"],
             after["recall@10"])
    export = save_sentence_transformer(model.to(torch.float32), run_dir / "model")
    try:
        (run_dir / "trainer").rmdir()  # the trainer's output_dir: empty, as nothing is checkpointed
    except OSError:
        pass
    results = {
        "run_name": cfg.run_name, "start": {"kind": str(cfg.start.kind), "path": str(cfg.start.path)},
        "recipe": loggable(r), "seed": cfg.seed, "device": device,
        "precision": "bf16" if bf16 else "fp32",
        "data": {"folder": str(cfg.data.folder), "train_pairs": len(pairs), "eval_queries": len(queries),
                 "corpus": len(corpus)},
        "truncation": cut,
        "train": {"steps": int(output.global_step), "loss": float(output.training_loss), "seconds": round(seconds, 2)},
        "before": before, "after": after, "model": str(export),
    }
    atomic_write_json(run_dir / "results.json", results)
    forget_generated_run_name()
    return results
