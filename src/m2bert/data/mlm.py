"""The MLM stream: a StreamingDataset over C4 MDS shards (either mode) and a masking collator.

Masks are a pure function of ``(seed, epoch, sample index)``, not of worker count, batch
composition or how many batches came before, so a run resumed mid-epoch from the streaming
dataset's own state (what Composer checkpoints) sees exactly the masks an uninterrupted run
would have seen; and every epoch still re-masks each row (dynamic masking, as in RoBERTa/M2).
Evaluation streams (``remask_each_epoch=False``) mask by ``(seed, sample index)`` alone: every
evaluation pass restarts the stream as a new epoch, and the eval loss must not depend on how
many passes came before (a resumed run has made fewer).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from streaming import StreamingDataLoader, StreamingDataset
from transformers import PreTrainedTokenizerBase

from m2bert.data.shards import (AUTO_HASH, RECONVERT, ShardError, check_basenames, check_layout, choose_hash,
                                read_index, shard_file)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class ShardFormat:
    """What a split folder holds: raw ``text`` or pre-tokenised ``tokens`` rows of ``row_len``."""

    mode: str  # "text" | "tokens"
    row_len: int | None
    index_path: str


def split_dir(root: str, split: str | None) -> str:
    if split is None:
        return root
    return root.rstrip("/") + "/" + split if "://" in root else os.path.join(root, split)


def locate_index(local: str, remote: str | None, split: str | None) -> Path:
    """Return the local path of the split's ``index.json``, fetching it from ``remote`` if given.

    Fails before any StreamingDataset is built, with the missing path in the message.
    """
    local_dir = Path(split_dir(os.path.expanduser(local), split))
    if remote is None:
        idx = local_dir / "index.json"
        if not local_dir.exists():
            raise FileNotFoundError(f"MDS dataset folder {local_dir} does not exist (local={local!r}, split={split!r}): "
                                    f"make it with m2bert-convert-c4 --out-root {local}, or set data.local")
        if not idx.is_file():
            raise FileNotFoundError(f"{idx} is missing: {local_dir} is not a (complete) MDS dataset; convert it with "
                                    f"m2bert-convert-c4 --out-root {local} --force")
        return idx
    remote_idx = split_dir(remote, split).rstrip("/") + "/index.json"
    if "://" not in remote:  # a local folder used as the "remote"
        if not Path(remote_idx).is_file():
            raise FileNotFoundError(f"remote index {remote_idx} does not exist")
    from streaming.base.storage import CloudDownloader

    local_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".json", dir=local_dir)
    os.close(fd)
    os.unlink(tmp)
    try:
        downloader = CloudDownloader.get(remote_idx if "://" in remote_idx else None)
        try:
            downloader.download(remote_idx, tmp, 60)
        finally:
            downloader.clean_up()
    except Exception as exc:  # noqa: BLE001 - re-raised with the path named
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise FileNotFoundError(f"could not fetch {remote_idx}: {type(exc).__name__}: {exc}") from exc
    probe = local_dir / ".m2bert-remote-index.json"
    os.replace(tmp, probe)
    return probe


def detect_format(index_path: str | os.PathLike[str]) -> ShardFormat:
    """Raw text (column ``text``) or pre-tokenised (column ``tokens``, ``ndarray:<dtype>:<len>``)."""
    index = json.loads(Path(index_path).read_text())
    shards = index.get("shards") or []
    if not shards:
        raise ValueError(f"{index_path} lists no shards")
    names, encs = shards[0]["column_names"], shards[0]["column_encodings"]
    if "tokens" in names:
        enc = encs[names.index("tokens")]
        parts = enc.split(":")
        row_len = int(parts[2]) if len(parts) == 3 else None
        return ShardFormat("tokens", row_len, str(index_path))
    if "text" in names:
        return ShardFormat("text", None, str(index_path))
    raise ValueError(f"{index_path}: columns {names} are neither 'text' (raw) nor 'tokens' (pre-tokenised)")


def _check_index(index_path: Path, local_dir: Path, remote: str | None) -> list[dict[str, Any]]:
    """What streaming must not see: a shard file outside the local folder (it writes and deletes there), and, for
    local data, a shard streaming would delete or cannot find. Returns the index's shard entries."""
    if remote is None:
        return check_layout(local_dir, index_path)
    shards = read_index(index_path)
    check_basenames(index_path, shards, local_dir)
    cached = local_dir / "index.json"  # streaming reads a cached index instead of the remote's
    if cached.is_file():
        check_basenames(cached, read_index(cached), local_dir)
    return shards


# Streaming (0.13) registers a shared-memory prefix per dataset: each node's leader looks for the lowest free one,
# waits for every rank (a global barrier), then creates it. Two leaders on one host, whether two runs started together
# or two nodes of one run (a test on one machine), so pick the same one and one fails with FileExistsError; retrying
# then deadlocks a multi-process run, whose barriers no longer pair up. Here the search and the creation are one step
# under a host-wide lock, and each rank learns its leader's prefix from a collective that every rank joins.
_PREFIX_LOCK = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                            "m2bert-streaming-prefix.lock")


def _register_shm_prefix(streams_local: list[str], streams_remote: list[str | None], world: Any,
                         retry: int = 100) -> tuple[int, Any]:
    """streaming.base.shared.get_shm_prefix with the leader's search and registration atomic on this host."""
    import fcntl

    from streaming.base.constant import LOCALS, SHM_TO_CLEAN
    from streaming.base.shared import SharedMemory
    from streaming.base.shared.prefix import (_check_and_find_retrying, _check_self, _get_path, _pack_locals,
                                              _unpack_locals)
    from torch import distributed as dist

    _check_self(streams_local)
    prefix, shm = -1, None
    if world.is_local_leader:
        with open(_PREFIX_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            prefix = max(_check_and_find_retrying(streams_local, streams_remote, shm_name=name, retry=retry)
                         for name in SHM_TO_CLEAN)
            data = _pack_locals(streams_local, prefix)
            shm = SharedMemory(_get_path(prefix, LOCALS), True, len(data))
            shm.buf[:len(data)] = data
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        prefixes: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(prefixes, prefix)
        prefix = prefixes[dist.get_rank() - world.rank_of_node]  # this node's leader's
    if not world.is_local_leader:
        shm = SharedMemory(_get_path(prefix, LOCALS), False)
        if _unpack_locals(bytes(shm.buf)) != (streams_local, prefix):
            raise RuntimeError(f"streaming's shared memory {_get_path(prefix, LOCALS)} does not hold this node's "
                               f"data folders {streams_local}: every rank of a node must use the same data.local")
    return prefix, shm


@contextmanager
def _atomic_shm_prefix() -> Iterator[None]:
    """StreamingDataset.__init__ registering its shared-memory prefix with :func:`_register_shm_prefix`."""
    import streaming.base.dataset as streaming_dataset

    original = streaming_dataset.get_shm_prefix
    streaming_dataset.get_shm_prefix = _register_shm_prefix
    try:
        yield
    finally:
        streaming_dataset.get_shm_prefix = original


class MLMStreamingDataset(StreamingDataset):
    """Yields dicts of int64 ``input_ids``/``attention_mask``/``token_type_ids`` (length ``max_seq_len``).

    Raw-text shards are tokenised here (``[CLS] text [SEP]``, truncated and padded); pre-tokenised
    rows are passed through. Each item also carries ``sample_idx`` and ``epoch``, which
    :class:`MLMCollator` uses to seed its masks.
    """

    def __init__(self, *, local: str, remote: str | None = None, split: str | None = None,
                 tokenizer: PreTrainedTokenizerBase, max_seq_len: int = 128, remask_each_epoch: bool = True,
                 validate_hash: str | None = AUTO_HASH, **kwargs: Any) -> None:
        index_path = locate_index(local, remote, split)
        shards = _check_index(index_path, Path(split_dir(os.path.expanduser(local), split)), remote)
        self.shard_format = detect_format(index_path)
        if self.shard_format.mode == "tokens" and self.shard_format.row_len not in (None, max_seq_len):
            raise ValueError(f"{self.shard_format.index_path}: rows are {self.shard_format.row_len} tokens, but "
                             f"max_seq_len={max_seq_len}; re-convert with --concat-tokens {max_seq_len}")
        with _atomic_shm_prefix():
            super().__init__(local=local, remote=remote, split=split,
                             validate_hash=choose_hash(index_path, shards, validate_hash), **kwargs)
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.vocab_size = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._m2_epoch = 0
        self.remask_each_epoch = remask_each_epoch
        self._m2_error: BaseException | None = None
        self._m2_where = split_dir(local, split)

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        # Name the shard in any reader error (zstd, checksum, missing file), here or in a thread. Streaming's own
        # blocking wait polls until whoever is preparing the shard marks it local; a prefetch thread that failed on
        # it never does (the shard stays PREPARING), so the wait is ours, and it stops at that thread's error.
        from streaming.base.constant import TICK
        from streaming.base.dataset import _ShardState

        try:
            super().prepare_shard(shard_id, blocking=False)
            while blocking and self._shard_states[shard_id] == _ShardState.PREPARING:
                self._raise_reader_error()
                time.sleep(TICK)
        except ShardError:
            raise
        except Exception as e:  # noqa: BLE001 - re-raised with the shard named
            raise ShardError(f"{shard_file(self, shard_id)}: cannot read shard ({type(e).__name__}: {e}); "
                             f"{RECONVERT}") from e

    def on_exception(self, future: Any) -> None:
        # Streaming's prefetch threads fail quietly (the epoch just ends early); keep the error for __iter__.
        if future.exception() is not None and self._m2_error is None:
            self._m2_error = future.exception()
        super().on_exception(future)

    def _raise_reader_error(self) -> None:
        if self._m2_error is not None:
            err = self._m2_error
            raise err if isinstance(err, ShardError) else ShardError(f"{self._m2_where}: cannot read shards ({type(err).__name__}: {err}); {RECONVERT}")

    def __iter__(self) -> Any:
        for item in super().__iter__():
            yield item
        self._raise_reader_error()  # an epoch cut short by a reader error is an error, never a short epoch

    def _resume_incr_epoch(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        # Remember the epoch this iterator is in (each worker runs this itself) for mask seeding.
        epoch, sample_in_epoch = super()._resume_incr_epoch(*args, **kwargs)
        self._m2_epoch = int(epoch)
        return epoch, sample_in_epoch

    def get_item(self, sample_id: int, retry: int = 7) -> dict[str, Any]:
        self._raise_reader_error()
        try:
            sample = super().get_item(sample_id, retry)
        except ShardError:
            raise
        except Exception as e:  # noqa: BLE001 - "Relative sample index N is not present" etc., with the shard named
            self._raise_reader_error()
            shard_id = int(self.spanner[sample_id][0])
            raise ShardError(f"{shard_file(self, shard_id)}: cannot read sample {sample_id} ({type(e).__name__}: {e}); "
                             f"{RECONVERT}") from e
        n = self.max_seq_len
        if "tokens" in sample:
            ids = np.asarray(sample["tokens"], dtype=np.int64)
            if ids.shape != (n,):
                raise ValueError(f"sample {sample_id} has {ids.shape[0]} tokens, expected {n}")
            if ids.size and int(ids.max()) >= self.vocab_size:
                raise ValueError(f"sample {sample_id} has token id {int(ids.max())} >= vocab size {self.vocab_size}: "
                                 f"the shards were made with a different tokenizer")
            attention = (ids != self.pad_id).astype(np.int64)
            token_type = np.zeros(n, dtype=np.int64)
        else:
            enc = self._encode(sample["text"])
            ids = np.asarray(enc["input_ids"], dtype=np.int64)
            attention = np.asarray(enc["attention_mask"], dtype=np.int64)
            token_type = np.asarray(enc["token_type_ids"], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": attention, "token_type_ids": token_type,
                "sample_idx": int(sample_id), "epoch": self._m2_epoch if self.remask_each_epoch else 0}


    def _encode(self, text: str) -> Any:
        """Tokenise, truncate and pad; long documents are cut at a space first (same ids, much faster)."""
        n = self.max_seq_len
        budget = n * _CHARS_PER_TOKEN_CUT
        if len(text) > budget:
            cut = max(text.rfind(" ", 0, budget), text.rfind("\n", 0, budget))
            if cut > 0:
                # BERT-style pre-tokenisers split at whitespace, so the ids of a prefix ending at a space
                # are a prefix of the document's ids: if it already fills the row, the result is identical.
                enc = self.tokenizer(text[:cut], truncation=True, max_length=n, padding="max_length",
                                     return_token_type_ids=True, return_attention_mask=True)
                if enc["attention_mask"][-1] == 1:
                    return enc
        return self.tokenizer(text, truncation=True, max_length=n, padding="max_length",
                              return_token_type_ids=True, return_attention_mask=True)


_CHARS_PER_TOKEN_CUT = 8


def _mask_seed(seed: int, epoch: int, sample_idx: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{sample_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class MLMCollator:
    """BERT masking: pick ``mlm_probability`` of the real tokens; of those 80% → [MASK], 10% → random, 10% kept.

    Special tokens ([CLS], [SEP], [PAD], …) and padding positions are never picked; ``labels``
    hold the original id at picked positions and -100 elsewhere. Rows with ``sample_idx`` are
    masked from a generator seeded by ``(seed, epoch, sample_idx)``; rows without one use a
    single generator seeded by ``seed`` (deterministic for the same sequence of calls).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15, seed: int = 0,
                 mask_fraction: float = 0.8, random_fraction: float = 0.1) -> None:
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token")
        self.mlm_probability = float(mlm_probability)
        self.mask_fraction = float(mask_fraction)
        self.random_fraction = float(random_fraction)
        self.seed = int(seed)
        self.mask_id = int(tokenizer.mask_token_id)
        self.pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else -1
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        vocab = len(tokenizer)
        self.vocab_size = vocab
        allowed = torch.ones(vocab, dtype=torch.bool)
        allowed[self.special_ids[self.special_ids < vocab]] = False
        self.random_ids = torch.nonzero(allowed).flatten()  # replacements are never special tokens
        self._gen = torch.Generator().manual_seed(self.seed)

    def _draws(self, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = torch.rand(2, length, generator=gen)
        r = torch.randint(len(self.random_ids), (length,), generator=gen)
        return u[0], u[1], r

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = torch.stack([torch.as_tensor(np.asarray(s["input_ids"]), dtype=torch.long) for s in samples])
        if "attention_mask" in samples[0]:
            attention = torch.stack([torch.as_tensor(np.asarray(s["attention_mask"]), dtype=torch.long)
                                     for s in samples])
        else:
            attention = (input_ids != self.pad_id).long()
        if "token_type_ids" in samples[0]:
            token_type = torch.stack([torch.as_tensor(np.asarray(s["token_type_ids"]), dtype=torch.long)
                                      for s in samples])
        else:
            token_type = torch.zeros_like(input_ids)
        check_batch(input_ids, attention, token_type, self.vocab_size, samples)
        b, n = input_ids.shape
        u_pick, u_kind, rnd = torch.empty(b, n), torch.empty(b, n), torch.empty(b, n, dtype=torch.long)
        for i, s in enumerate(samples):
            if "sample_idx" in s:
                gen = torch.Generator().manual_seed(_mask_seed(self.seed, int(s.get("epoch", 0)), int(s["sample_idx"])))
            else:
                gen = self._gen
            u_pick[i], u_kind[i], rnd[i] = self._draws(n, gen)
        maskable = ~torch.isin(input_ids, self.special_ids) & (attention != 0)
        picked = (u_pick < self.mlm_probability) & maskable
        labels = torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        to_mask = picked & (u_kind < self.mask_fraction)
        to_random = picked & (u_kind >= self.mask_fraction) & (u_kind < self.mask_fraction + self.random_fraction)
        masked = input_ids.clone()
        masked[to_mask] = self.mask_id
        masked[to_random] = self.random_ids[rnd[to_random]]
        return {"input_ids": masked, "attention_mask": attention, "token_type_ids": token_type, "labels": labels}


def check_batch(input_ids: torch.Tensor, attention: torch.Tensor, token_type: torch.Tensor, vocab_size: int,
                samples: Sequence[dict[str, Any]], type_vocab_size: int = 2) -> None:
    """The model's input value checks (m2bert.model.inputs), once per batch on the host, where they cost no
    device sync; the error names the sample."""
    from m2bert.model.inputs import check_shapes, check_values

    check_shapes(input_ids, attention, token_type)
    try:
        check_values(input_ids, attention, token_type, vocab_size, type_vocab_size)
    except ValueError as e:
        ids = [s.get("sample_idx") for s in samples]
        where = f" (batch of samples {ids[:4]}{'…' if len(ids) > 4 else ''})" if ids and ids[0] is not None else ""
        raise ValueError(f"MLM batch{where}: {e}") from e


def build_mlm_dataset(*, local: str, remote: str | None, split: str | None, tokenizer: PreTrainedTokenizerBase,
                      max_seq_len: int = 128, shuffle: bool = False, seed: int = 0, batch_size: int | None = None,
                      **dataset_kwargs: Any) -> MLMStreamingDataset:
    """The dataset alone (for code that builds its own loader)."""
    return MLMStreamingDataset(local=local, remote=remote, split=split, tokenizer=tokenizer, max_seq_len=max_seq_len,
                               shuffle=shuffle, shuffle_seed=seed, batch_size=batch_size, **dataset_kwargs)


def build_mlm_dataloader(*, local: str, remote: str | None, split: str, tokenizer: PreTrainedTokenizerBase,
                         max_seq_len: int, batch_size: int, mlm_probability: float, shuffle: bool, seed: int,
                         num_workers: int = 0, drop_last: bool = True, remask_each_epoch: bool = True,
                         **dataset_kwargs: Any) -> StreamingDataLoader:
    """A StreamingDataLoader of MLM batches: int64 input_ids, attention_mask, token_type_ids, labels (B, L).

    ``local`` is the local dataset root (or the cache, with ``remote``); shards may be raw text or
    pre-tokenised, detected from ``index.json``. ``remask_each_epoch=False`` (evaluation) gives every
    pass the same masks. Extra keyword arguments go to StreamingDataset
    (``predownload``, ``num_canonical_nodes``, ``epoch_size``, ``cache_limit``, …).
    """
    dataset = build_mlm_dataset(local=local, remote=remote, split=split, tokenizer=tokenizer, max_seq_len=max_seq_len,
                                shuffle=shuffle, seed=seed, batch_size=batch_size, remask_each_epoch=remask_each_epoch,
                                **dataset_kwargs)
    collator = MLMCollator(tokenizer, mlm_probability=mlm_probability, seed=seed)
    log.info("MLM stream %s (%s rows, %s mode), batch %d, mlm_probability %.2f", split_dir(local, split),
             dataset.size, dataset.shard_format.mode, batch_size, mlm_probability)
    return StreamingDataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=num_workers,
                               drop_last=drop_last, persistent_workers=num_workers > 0, pin_memory=False)
