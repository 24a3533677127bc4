"""MLM pretraining of M2-BERT (or the BERT baseline) with Composer, configured by Hydra.

    m2bert-pretrain                                         # the paper's recipe, m2-bert-base-80m on C4
    m2bert-pretrain model=m2_bert_base_110m optimizer.lr=5e-4
    composer -n 8 -m m2bert.pretrain data.local=/data/c4   # 8 GPUs, DDP
"""
from __future__ import annotations

import logging
import os
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from m2bert import cli
from m2bert.atomic import atomic_write_json
from m2bert.train.schema import register

log = logging.getLogger("m2bert.pretrain")
register()


def check_data(cfg: DictConfig) -> None:
    """Fail before any heavy work when the shards are not where the config says, or (local data)
    do not match their index.json: missing, truncated, corrupt offsets, wrong hash with validate_hash."""
    from m2bert.data.mlm import locate_index
    from m2bert.data.shards import check_shards

    for split in (cfg.train_split, cfg.eval_split):
        index = locate_index(cfg.local, cfg.remote, split)  # raises FileNotFoundError naming the path
        if cfg.remote is None:
            check_shards(index.parent, cfg.validate_hash)  # raises ShardError naming the shard


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate (before anything heavy is imported), build everything, train, export; returns a short summary."""
    from m2bert.train.validate import check_pretrain

    cli.check_missing(cfg)
    check_pretrain(cfg)
    check_data(cfg.data)

    from composer import Evaluator, Trainer
    from composer.algorithms import GradientClipping
    from composer.utils import dist, reproducibility

    from m2bert.data.mlm import build_mlm_dataloader
    from m2bert.data.tokenizer import load_tokenizer
    from m2bert.train import builders
    from m2bert.train.callbacks import EvalHistory, ResumableRNG
    from m2bert.train.composer_models import ComposerMLM

    device, precision = builders.resolve_device_and_precision(cfg.device, cfg.precision)
    tokenizer = load_tokenizer(cfg.data.tokenizer)
    world = dist.get_world_size()
    if cfg.global_train_batch_size % world:
        raise builders.ConfigError(f"global_train_batch_size={cfg.global_train_batch_size} is not divisible by {world} devices")
    reproducibility.seed_all(cfg.seed)
    model = builders.build_mlm_model(cfg.model, cfg.impl, len(tokenizer), cfg.data.max_seq_len)
    log.info("model: %s (%s), %.1fM parameters", cfg.model.preset, type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6)

    def loader(split: str, mlm_probability: float, batch_size: int, shuffle: bool) -> Any:
        # Training drops the last partial batch (constant batch size); evaluation sees every row.
        return build_mlm_dataloader(
            local=cfg.data.local, remote=cfg.data.remote, split=split, tokenizer=tokenizer, max_seq_len=cfg.data.max_seq_len, batch_size=batch_size,
            mlm_probability=mlm_probability, shuffle=shuffle, seed=cfg.seed, num_workers=cfg.data.num_workers,
            drop_last=shuffle, validate_hash=cfg.data.validate_hash,
        )

    train_loader = loader(cfg.data.train_split, cfg.data.mlm_probability, cfg.global_train_batch_size // world, True)
    eval_loader = loader(cfg.data.eval_split, cfg.data.eval_mlm_probability, cfg.device_eval_batch_size, False)
    composer_model = ComposerMLM(model)
    history = EvalHistory()
    run_dir = os.path.join(cfg.run_root, cfg.run_name)
    save_folder = cfg.save_folder or os.path.join(run_dir, "checkpoints")
    microbatch = min(cfg.impl.device_train_microbatch_size, cfg.global_train_batch_size // world)
    trainer = Trainer(
        model=composer_model,
        train_dataloader=train_loader,
        eval_dataloader=Evaluator(label="eval", dataloader=eval_loader, metric_names=list(composer_model.eval_metrics)),
        optimizers=builders.build_optimizer(model, cfg.optimizer),
        schedulers=builders.build_scheduler(cfg.scheduler),
        max_duration=cfg.max_duration,
        eval_interval=cfg.eval_interval,
        eval_subset_num_batches=cfg.eval_subset_num_batches,
        algorithms=[GradientClipping(clipping_type="norm", clipping_threshold=cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else [],
        callbacks=builders.build_callbacks(device) + [history, ResumableRNG()],
        loggers=builders.build_loggers(cfg.logger, cfg.run_name),
        run_name=cfg.run_name,
        device=device,
        precision=precision,
        device_train_microbatch_size=microbatch,
        seed=cfg.seed,
        save_folder=save_folder,
        save_interval=cfg.save_interval,
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        save_overwrite=not cfg.autoresume,
        autoresume=cfg.autoresume,
        load_path=cfg.load_path,
        progress_bar=cfg.progress_bar,
        log_to_console=True,
        console_log_interval=cfg.console_log_interval,
        parallelism_config={"fsdp": OmegaConf.to_container(cfg.parallel.fsdp)} if cfg.parallel.name == "fsdp" else None,
    )
    if cfg.eval_at_start and int(trainer.state.timestamp.batch) == 0:
        trainer.eval()
    trainer.fit()
    summary: dict[str, Any] = {
        "run_dir": run_dir,
        "checkpoints": save_folder,
        "batches": int(trainer.state.timestamp.batch),
        "eval": history.records,
    }
    if dist.get_global_rank() == 0:
        if cfg.export_hf:
            summary["hf_export"] = builders.atomic_save_pretrained(model, tokenizer, os.path.join(run_dir, "hf"))
            log.info("Hugging Face export: %s", summary["hf_export"])
        atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    trainer.close()
    return summary


@hydra.main(config_path="pkg://m2bert.yamls", config_name="pretrain", version_base=None)
def hydra_main(cfg: DictConfig) -> None:
    cli.task_started()
    try:
        summary = run(cfg)
    except cli.USER_ERRORS as e:
        cli.fail("m2bert-pretrain", e)
    if summary["eval"]:
        first, last = summary["eval"][0], summary["eval"][-1]
        log.info("eval MLM loss: first %.4f (batch %d) → last %.4f (batch %d)",
                 first["loss"], first["batch"], last["loss"], last["batch"])


def main() -> None:
    """The ``m2bert-pretrain`` console script: user errors are one line on stderr and exit 2."""
    cli.entry(hydra_main)


if __name__ == "__main__":
    main()
