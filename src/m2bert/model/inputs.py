"""Checks of the model's inputs, so bad ones fail with one line naming the argument.

Without them an id ≥ vocab_size or a token type ≥ type_vocab_size fails as "index out of range in
self", an empty batch as an FFT error, and an attention mask of the wrong shape or with values
other than 0/1 silently changes the logits. Shape checks read only metadata and always run.
Value checks reduce over the tensors and read the result on the host — a device sync on a GPU —
so they run where that is free, on CPU tensors, and on accelerators only when asked:
``M2BertConfig.check_inputs`` None (default: CPU only), True (always), False (never). Training data
is also checked once per batch, on the host, by :class:`m2bert.data.mlm.MLMCollator`.
"""
from __future__ import annotations

import torch


def check_shapes(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> None:
    """(batch, length) integer ids, at least one row of one token; the other inputs the same shape."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length); got shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}); pass at least one row of at least one token")
    if input_ids.is_floating_point() or input_ids.is_complex():
        raise ValueError(f"input_ids must be integer token ids; got dtype {input_ids.dtype}")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids), ("labels", labels)):
        if t is not None and t.shape != input_ids.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but input_ids has {tuple(input_ids.shape)}; they must match")


def should_check_values(flag: bool | None, t: torch.Tensor) -> bool:
    """True → always, False → never, None → only where it costs no device sync (CPU), never while compiling."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return flag if flag is not None else t.device.type == "cpu"


def check_values(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None,
                 vocab_size: int, type_vocab_size: int) -> None:
    """Ids in [0, vocab_size), token types in [0, type_vocab_size), attention mask of 0s and 1s."""
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"input_ids holds id {bad}, outside [0, vocab_size={vocab_size}): the tokenizer does not "
                         f"match the model")
    if token_type_ids is not None:
        lo, hi = int(token_type_ids.min()), int(token_type_ids.max())
        if lo < 0 or hi >= type_vocab_size:
            raise ValueError(f"token_type_ids holds {lo if lo < 0 else hi}, outside [0, type_vocab_size={type_vocab_size})")
    if attention_mask is not None:
        bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
        if bad.numel():
            raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (token); found {bad.flatten()[0].item()}")
