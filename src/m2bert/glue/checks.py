"""Start-up checks of a GLUE run that need the resolved start: does the tokenizer fit the model?

A tokenizer with other ids than the one the model was pretrained with fine-tunes on wrong ids
without a word (the run trains, the scores are poor). Refused: a tokenizer larger than the model's
vocabulary, and one whose vocabulary differs from the tokenizer saved with the start (the HF
directory, or the ``hf/`` export beside a Composer checkpoint).
"""
from __future__ import annotations

import os
from typing import Any

from m2bert.options import ConfigError


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
    from m2bert.glue.jobs import get_tokenizer

    if get_tokenizer(saved).get_vocab() != tok.get_vocab():
        raise ConfigError(f"start.tokenizer={start.tokenizer} has a different vocabulary than the tokenizer saved with "
                          f"the model in {saved}; drop start.tokenizer (the saved one is used) or pass start.tokenizer={saved}")
