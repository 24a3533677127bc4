"""MLM pretraining of M2-BERT (or the BERT baseline) with Composer, configured by Hydra.

    m2bert-pretrain                                         # the paper's recipe, m2-bert-base-80m on C4
    m2bert-pretrain model=m2_bert_base_110m optimizer.lr=5e-4
    composer -n 8 -m m2bert.pretrain data.local=/data/c4   # 8 GPUs, DDP
"""
from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from m2bert import cli
from m2bert.atomic import atomic_write_json
from m2bert.options import ConfigError, loggable
from m2bert.run_folder import RunFolder, check_run_name, claimed
from m2bert.cli import GLUE_ONLY, register_resolvers, reject_foreign_groups
from m2bert.train.schema import PretrainConfig, register

log = logging.getLogger("m2bert.pretrain")
register()
register_resolvers()


# A data path whose config default is ``${oc.env:VAR,default}...``: what VAR names, for the error when it is missing.
_ENV_DEFAULT = re.compile(r"\$\{oc\.env:(\w+),")
ENV_FOLDERS = {
    "M2BERT_SAMPLE_DIR": "the folder make demo wrote (its --out, demo_out by default)",
    "M2BERT_C4_DIR": "the --out-root of m2bert-convert-c4",
}


def check_env_folder(cfg: DictConfig) -> None:
    """``data.local`` left at its config's ``${oc.env:VAR,default}`` (``data=sample``: ``demo_out/mds``, relative
    to the current folder) and missing: one line naming VAR and the fix, rather than the relative path alone."""
    raw = OmegaConf.to_container(cfg, resolve=False).get("local")
    env = _ENV_DEFAULT.search(str(raw))
    local = Path(os.path.expanduser(cfg.local))
    if env is None or cfg.remote is not None or local.is_dir():
        return
    var = env.group(1)
    where = f"{var}={os.environ[var]}" if var in os.environ else \
        f"{var} is unset, so it is {cfg.local}, relative to the current folder {Path.cwd()}"
    raise FileNotFoundError(f"data.local: {local.absolute()} does not exist ({where}): set {var}=<"
                            f"{ENV_FOLDERS.get(var, 'the data folder')}> as an absolute path, or data.local=<MDS folder>")


def check_data(cfg: DictConfig) -> int | None:
    """Fail before any heavy work when the shards are not where the config says, or (local data)
    do not match their index.json: missing, truncated, corrupt offsets, wrong hash with validate_hash. Data in an
    object store: one line naming the URL when the store cannot be listed (wrong bucket or credentials, store
    down), and every listed shard must be there with its size (hashes are checked as shards download). Returns
    the train split's rows (None: not counted)."""
    from m2bert import object_store
    from m2bert.data.mlm import locate_index, split_dir
    from m2bert.data.shards import check_remote_shards, check_shards

    check_env_folder(cfg)
    rows: dict[str, int] = {}
    for split in (cfg.train_split, cfg.eval_split):
        if split is None:  # data.eval_split=null: no evaluation
            continue
        url = split_dir(cfg.remote, split) if object_store.is_remote(cfg.remote or "") else None
        listing = object_store.list_objects(url, "data.remote") if url else None  # bounded time, one line
        index = locate_index(cfg.local, cfg.remote, split)  # raises FileNotFoundError naming the path
        if cfg.remote is None:
            rows[split] = check_shards(index.parent, cfg.validate_hash)  # raises ShardError naming the shard
        elif url is not None and listing is not None:
            rows[split] = check_remote_shards(index, listing, url)
    return rows.get(cfg.train_split)


def check_enough_rows(rows: int | None, cfg: DictConfig) -> None:
    """A train split smaller than one global batch trains nothing (the last partial batch is dropped), and Composer
    then loops over empty epochs forever, silently: one line instead."""
    if rows is not None and rows < cfg.global_train_batch_size:
        raise ConfigError(f"data.local={cfg.data.local}: the {cfg.data.train_split} split holds {rows} rows, fewer than "
                          f"one batch (global_train_batch_size={cfg.global_train_batch_size}), so no batch would be "
                          f"trained: set global_train_batch_size<={rows}, or convert more text")


def run_folder(cfg: DictConfig, run_name: str | None = None) -> RunFolder:
    """``<run_root>/<run_name>`` and how an earlier run there may be reused (``autoresume``, ``overwrite``); the
    Hydra callback (``hydra.callbacks.run_folder`` in yamls/pretrain.yaml) claims it before Hydra writes there."""
    name = check_run_name(cfg.run_name if run_name is None else run_name)
    return RunFolder(Path(cfg.run_root) / name, resume_key="autoresume", resume=bool(cfg.autoresume),
                     overwrite=bool(cfg.overwrite))


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate (before anything heavy is imported), claim the run folder, build everything, train, export;
    returns a short summary."""
    from m2bert.train.validate import check_pretrain

    cli.check_missing(cfg)
    check_pretrain(cfg)
    check_enough_rows(check_data(cfg.data), cfg)
    from m2bert.data.tokenizer import load_configured_tokenizer

    tokenizer = load_configured_tokenizer("data.tokenizer", cfg.data.tokenizer)  # before the run folder is claimed

    from m2bert.train import builders, runs

    device, precision = builders.resolve_device_and_precision(cfg.device, cfg.precision)
    if cfg.parallel.name == "fsdp" and device == "cpu" and os.environ.get("FSDP_VERSION", "1") != "2":
        raise ConfigError("parallel=fsdp on CPU: Composer's FSDP pins every rank to a CUDA device; use parallel=ddp, "
                          "or set FSDP_VERSION=2 (Composer's experimental FSDP2, which runs on CPU)")
    run_name = runs.agree_on_run_name(cfg.run_name, device)
    folder = run_folder(cfg, run_name)
    with claimed(folder):
        return train(cfg, run_name, str(folder.path), device, precision, tokenizer)


def train(cfg: DictConfig, run_name: str, run_dir: str, device: str, precision: str, tokenizer: Any) -> dict[str, Any]:
    """Everything after the checks, in the claimed run folder: the run's save folder is checked (continued,
    replaced or refused), then build, train, export (``tokenizer``: ``data.tokenizer``'s, loaded by the checks)."""
    from composer import Evaluator, Trainer
    from composer.algorithms import GradientClipping
    from composer.utils import dist, format_name_with_dist, reproducibility

    from m2bert.data.mlm import build_mlm_dataloader
    from m2bert.train import builders
    from m2bert.train import runs
    from m2bert.train.callbacks import EvalHistory, FilterEnergy, ResumableRNG, TrainLossHistory
    from m2bert.train.checkpoint_safety import check_shapes, verified_checkpoint, warn_trusted
    from m2bert.train.composer_models import ComposerMLM
    from m2bert.train.context_use import context_use
    from m2bert.train.loss_chart import write_loss_chart
    from m2bert.train.torch_compile import CompileTimer, composer_compile_config

    save_folder = cfg.save_folder or os.path.join(run_dir, "checkpoints")
    runs.guard_save_folder(save_folder, cfg.autoresume, cfg.overwrite)
    if cfg.autoresume:
        runs.check_same_run(run_dir, save_folder)
    elif cfg.overwrite and dist.get_global_rank() == 0:
        runs.remove_checkpoints(save_folder)  # the earlier run's, where save_folder is outside the run folder
    resume_from = runs.prepare_autoresume(save_folder, dist.get_global_rank()) if cfg.autoresume else None
    # What Composer would read: the newest checkpoint when resuming (it takes precedence, as in Composer's
    # autoresume), else load_path; rank 0's, which Composer's non-sharded load reads on every node.
    load_path = cfg.load_path and format_name_with_dist(cfg.load_path, run_name)
    if resume_from is not None and not isinstance(resume_from, str):
        resume_from = os.path.realpath(resume_from)  # a local ``latest`` link: the file it points at
    source = runs.from_rank_zero(resume_from or load_path or None, device)
    with ExitStack() as loading:  # holds the private verified copy until the Trainer has loaded it
        verified = None
        if source is not None and cfg.trust_checkpoint:
            warn_trusted(source)
        elif source is not None:
            # Read once, verified, re-saved privately: Composer never opens the user's file (no swap after the
            # check, no tar extraction), and autoresume is ours, so Composer's own autoresume stays off.
            verified = loading.enter_context(verified_checkpoint(source))
            log.info("loading %s (verified, re-saved at %s)", source, verified.path)
        compile_config = composer_compile_config(cfg.impl.compile, device)
        world = dist.get_world_size()
        if cfg.global_train_batch_size % world:
            raise ConfigError(f"global_train_batch_size={cfg.global_train_batch_size} is not divisible by {world} devices")
        nodes, canonical = world // dist.get_local_world_size(), cfg.data.num_canonical_nodes
        if canonical is not None and canonical % nodes and nodes % canonical:
            raise ConfigError(f"data.num_canonical_nodes={canonical} on {nodes} nodes: one must divide the other "
                              f"(streaming splits the samples into canonical nodes, then those among the nodes)")
        reproducibility.seed_all(cfg.seed)
        model = builders.build_mlm_model(cfg.model, cfg.impl, len(tokenizer), cfg.data.max_seq_len)
        composer_model = ComposerMLM(model)
        if verified is not None:
            check_shapes(verified.model_shapes, composer_model.state_dict(), verified.source)
        log.info("model: %s (%s), %.1fM parameters", cfg.model.preset, type(model).__name__,
                 sum(p.numel() for p in model.parameters()) / 1e6)
        fsdp = cfg.parallel.name == "fsdp"
        tied = builders.tied_parameter_names(model) if fsdp else []

        def loader(split: str, mlm_probability: float, batch_size: int, shuffle: bool) -> Any:
            # Training drops the last partial batch (constant batch size) and re-masks every epoch; evaluation sees
            # every row, with the same masks on every pass.
            return build_mlm_dataloader(
                local=cfg.data.local, remote=cfg.data.remote, split=split, tokenizer=tokenizer, max_seq_len=cfg.data.max_seq_len, batch_size=batch_size,
                mlm_probability=mlm_probability, shuffle=shuffle, seed=cfg.seed, num_workers=cfg.data.num_workers,
                drop_last=shuffle, remask_each_epoch=shuffle, validate_hash=cfg.data.validate_hash,
                num_canonical_nodes=cfg.data.num_canonical_nodes,
            )

        train_loader = loader(cfg.data.train_split, cfg.data.mlm_probability, cfg.global_train_batch_size // world, True)
        eval_loader = None if cfg.data.eval_split is None else \
            loader(cfg.data.eval_split, cfg.data.eval_mlm_probability, cfg.device_eval_batch_size, False)
        if eval_loader is None:
            log.info("no evaluation: data.eval_split=null (no held-out MLM loss, no context-use measurement)")
        history, filters, train_loss = EvalHistory(), FilterEnergy(), TrainLossHistory()
        progress_bar = show_progress_bar(cfg.progress_bar)
        microbatch = min(cfg.impl.device_train_microbatch_size, cfg.global_train_batch_size // world)
        trainer = Trainer(
            model=composer_model,
            train_dataloader=train_loader,
            eval_dataloader=None if eval_loader is None else
            Evaluator(label="eval", dataloader=eval_loader, metric_names=list(composer_model.eval_metrics)),
            optimizers=builders.build_optimizer(model, cfg.optimizer),
            schedulers=builders.build_scheduler(cfg.scheduler),
            max_duration=builders.duration_in_batches(cfg.max_duration, cfg.global_train_batch_size),
            # Without an evaluator Composer warns about any non-default eval settings: they mean nothing then.
            eval_interval=cfg.eval_interval if eval_loader is not None else 1,
            eval_subset_num_batches=cfg.eval_subset_num_batches if eval_loader is not None else -1,
            algorithms=[GradientClipping(clipping_type="norm", clipping_threshold=cfg.grad_clip_norm)] if cfg.grad_clip_norm > 0 else [],
            callbacks=builders.build_callbacks(device) + [history, filters, train_loss, ResumableRNG()]
            + ([CompileTimer()] if compile_config is not None else []),
            loggers=builders.build_loggers(cfg.logger, run_name),
            run_name=run_name,
            device=device,
            precision=precision,
            device_train_microbatch_size=microbatch,
            seed=cfg.seed,
            save_folder=save_folder,
            save_interval=cfg.save_interval,
            save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
            save_overwrite=cfg.overwrite,
            autoresume=cfg.autoresume and cfg.trust_checkpoint,
            load_path=verified.path if verified is not None else cfg.load_path if cfg.trust_checkpoint else None,
            progress_bar=progress_bar,  # with ETA; the console lines otherwise (a log file, a pipe)
            log_to_console=not progress_bar,
            console_log_interval=cfg.console_log_interval,
            compile_config=compile_config,
            parallelism_config={"fsdp": OmegaConf.to_container(cfg.parallel.fsdp)} if cfg.parallel.name == "fsdp" else None,
        )
    refuse_finished(trainer.state, cfg, run_dir if resume_from is not None else None, trainer.close)
    trainer.logger.log_hyperparameters(loggable(cfg))  # every logger, W&B included
    if cfg.eval_at_start and eval_loader is not None and int(trainer.state.timestamp.batch) == 0:
        trainer.eval()
    trainer.fit()
    summary: dict[str, Any] = {
        "run_dir": run_dir,
        "checkpoints": save_folder,
        "batches": int(trainer.state.timestamp.batch),
        "eval_split": cfg.data.eval_split,  # null: the run had no evaluation, "eval" is empty and no "context_use"
        "eval": history.records,
        "train_loss": train_loss.records,  # loss.png's training curve
        "filter_energy": filters.records,
    }
    if cfg.context_eval_rows > 0 and not fsdp and eval_loader is not None:  # under FSDP every rank would have to run the same forwards
        summary["context_use"] = context_use(model, eval_loader, rows=cfg.context_eval_rows)
        trainer.logger.log_metrics({f"context_use/{k}": v for k, v in summary["context_use"].items()})
        log.info("context use: %s", summary["context_use"])
    # Under FSDP every rank holds a shard: all of them gather the weights, rank 0 writes them.
    full_state = builders.gather_full_state_dict(trainer.state.model, tied) if fsdp and cfg.export_hf else None
    if dist.get_global_rank() == 0:
        if cfg.export_hf:
            summary["hf_export"] = builders.atomic_save_pretrained(model, tokenizer, os.path.join(run_dir, "hf"),
                                                                   card=pretrain_card(cfg, summary), state_dict=full_state)
            log.info("Hugging Face export: %s", summary["hf_export"])
        summary["loss_chart"] = write_loss_chart(
            os.path.join(run_dir, "loss.png"), train_loss.records, history.records, cfg.data.max_seq_len,
            f"{run_name}: {cfg.model.preset}, {cfg.global_train_batch_size} x {cfg.data.max_seq_len} tokens per batch")
        atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    trainer.close()
    return summary


def refuse_finished(state: Any, cfg: DictConfig, resumed: str | None, close: Callable[[], Any]) -> None:
    """A loaded checkpoint that has already trained ``max_duration`` (``autoresume=true`` on a finished run, the
    ``resumed`` run folder; or a finished ``load_path``): one line saying so and what to do, where Composer's
    ``fit`` would raise with a traceback. ``close`` releases the built Trainer first (its loggers)."""
    elapsed = state.timestamp.get(state.max_duration.unit)
    if state.max_duration > elapsed:
        return
    close()
    done = f"has trained {elapsed} of max_duration={cfg.max_duration}"
    if resumed is not None:
        raise ConfigError(f"autoresume=true: the run in {resumed} is complete (it {done}): start a new run with "
                          f"another run_name, or raise max_duration to train it further")
    raise ConfigError(f"load_path={cfg.load_path} {done}, so no training would occur: raise max_duration to train "
                      f"it further")


def show_progress_bar(setting: bool | None) -> bool:
    """``progress_bar=null`` (the default): Composer's bar, with its ETA, when stderr is a terminal; one console
    line per ``console_log_interval`` otherwise, which reads well in a log file."""
    return sys.stderr.isatty() if setting is None else bool(setting)


def pretrain_card(cfg: DictConfig, summary: dict[str, Any]) -> str:
    """The export's README.md: preset, data, steps and tokens seen, last eval MLM loss."""
    from m2bert.train.model_card import model_card

    batches = summary["batches"]
    last = summary["eval"][-1] if summary["eval"] else None
    training = {
        "objective": f"masked language modelling ({cfg.data.mlm_probability:.0%} masking)",
        "model preset": f"{cfg.model.preset} ({cfg.model.family})", "data": f"{cfg.data.name} ({cfg.data.local})",
        "tokenizer": cfg.data.tokenizer, "steps": f"{batches} batches of {cfg.global_train_batch_size} sequences",
        "tokens": f"{batches * cfg.global_train_batch_size * cfg.data.max_seq_len:,} "
                  f"({cfg.data.max_seq_len} per sequence)",
        "optimizer": f"{cfg.optimizer.name}, lr {cfg.optimizer.lr}, weight decay {cfg.optimizer.weight_decay}",
        "seed": cfg.seed, "run": cfg.run_name,
    }
    if cfg.data.eval_split is None:
        training["evaluation"] = "none (data.eval_split=null: no held-out split)"
    evals = {f"eval MLM loss (batch {last['batch']})": f"{last['loss']:.4f}"} if last else None
    return model_card(f"{cfg.run_name}: pretrained {cfg.model.preset}", "A masked language model pretrained with "
                      "m2bert-pretrain.", training, "AutoModelForMaskedLM", evals)


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
    elif summary["eval_split"] is None:
        log.info("no eval MLM loss: data.eval_split=null")


def main() -> None:
    """The ``m2bert-pretrain`` console script: the other CLI's groups are refused, and user errors are one
    line on stderr, exit 2."""
    reject_foreign_groups("m2bert-pretrain", GLUE_ONLY)
    cli.check_choices("m2bert-pretrain", PretrainConfig)
    cli.entry(hydra_main, "m2bert-pretrain", "pretrain")


if __name__ == "__main__":
    main()
