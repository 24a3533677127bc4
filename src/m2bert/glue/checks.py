"""Start-up checks of a GLUE run, before the first job: the data files parse, and the start fits.

A tokenizer with other ids than the one the model was pretrained with fine-tunes on wrong ids
without a word (the run trains, the scores are poor). Refused: a tokenizer larger than the model's
vocabulary, and one whose vocabulary differs from the tokenizer saved with the start (the HF
directory, or the ``hf/`` export beside a Composer checkpoint).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from m2bert.config import max_input_length
from m2bert.data.glue_tasks import HF_SOURCES, cached_tokenizer, get_task, validate_task_files
from m2bert.glue.schema import GlueConfig, TaskSettings
from m2bert.glue.start import Start, check_padding, resolve_start
from m2bert.options import ConfigError


def check_values(config: GlueConfig, settings: dict[str, TaskSettings]) -> None:
    """Sizes and durations the schema's types cannot check, run-wide and per task (``settings``: by their
    ``glue.<task>`` key), as pretraining checks its own: positive, whole and within range."""
    from m2bert.train.validate import CONSOLE_UNITS, check_positive_ints, check_time

    if config.resume and config.overwrite:
        raise ConfigError("resume=true and overwrite=true: continue the earlier run or replace it, not both")
    if config.max_duration is not None:
        check_time("max_duration", config.max_duration, total=True)
    check_time("console_log_interval", config.console_log_interval, units=CONSOLE_UNITS)
    sizes = [("data.max_seq_len", config.data.max_seq_len), ("device_eval_batch_size", config.device_eval_batch_size)]
    for key in ("train_subset", "eval_subset", "device_train_microbatch_size"):  # null: all rows / the batch size
        if getattr(config, key) is not None:
            sizes.append((key, getattr(config, key)))
    for prefix, s in settings.items():
        sizes += [(f"{prefix}.batch_size", s.batch_size), (f"{prefix}.epochs", s.epochs)]
        if s.train_subset is not None:
            sizes.append((f"{prefix}.train_subset", s.train_subset))
        if s.max_duration is not None:
            check_time(f"{prefix}.max_duration", s.max_duration, total=True)
    check_positive_ints(sizes)


def check_data(source: str, tasks: list[str]) -> None:
    """Every train and eval file exists and every row parses with its label in range (local GLUE folder);
    the hub source is checked when loaded."""
    if str(source) in HF_SOURCES:
        return
    root = Path(source).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.source={source}: no such GLUE folder")
    for task in tasks:
        t = get_task(task)
        for split in ("train", *t.eval_splits):
            f = root / t.dir_name / t.splits[split]
            if not f.is_file():
                raise ConfigError(f"data.source={source}: {f} is missing ({t.name} {split})")
    for task in tasks:  # every row of every selected task, so a bad row in the last task stops round 1 too
        try:
            validate_task_files(root, task, ("train", *get_task(task).eval_splits))
        except ValueError as e:
            raise ConfigError(f"data.source={source}: {e}") from e


def check_start(config: GlueConfig, start: Start, chain_checkpoint: bool) -> None:
    """The resolved start fits the run: tokenizer, padding, sequence length; and ``chain.checkpoint``, when
    round 2 will start from it, resolves now rather than after round 1."""
    if chain_checkpoint and config.chain.checkpoint:
        resolve_start("hf", config.chain.checkpoint, tokenizer=start.tokenizer)
    check_tokenizer(start, cached_tokenizer(start.tokenizer))
    check_padding(start, config.data.pad_to_max_length)
    limit = max_input_length(start.config)
    if config.data.max_seq_len > limit:
        raise ConfigError(f"data.max_seq_len={config.data.max_seq_len} exceeds what {start.path} supports ({limit})")


def saved_tokenizer_dir(kind: str, path: str) -> str | None:
    """Where the start keeps the tokenizer it was exported with, if anywhere."""
    if kind == "hf":
        folder = path
    elif kind == "composer":
        folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "hf")
    else:
        return None
    has = os.path.isdir(folder) and any(os.path.isfile(os.path.join(folder, f))
                                        for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))
    return folder if has else None


def check_tokenizer(start: Any, tok: Any) -> None:
    """``tok`` (from ``start.tokenizer``) fits the model of ``start``; one ConfigError naming both otherwise."""
    if len(tok) > start.config.vocab_size:
        raise ConfigError(f"start.tokenizer={start.tokenizer} has {len(tok)} tokens but the model's vocab_size is "
                          f"{start.config.vocab_size}; pass the tokenizer the checkpoint was trained with (start.tokenizer)")
    saved = saved_tokenizer_dir(start.kind, start.path)
    if saved is None or os.path.abspath(saved) == os.path.abspath(os.path.expanduser(str(start.tokenizer))):
        return
    if cached_tokenizer(saved).get_vocab() != tok.get_vocab():
        raise ConfigError(f"start.tokenizer={start.tokenizer} has a different vocabulary than the tokenizer saved with "
                          f"the model in {saved}; drop start.tokenizer (the saved one is used) or pass start.tokenizer={saved}")
