"""Bad input ends with one line naming the problem, never a hang or a silent wrong answer (issue 15):
MDS shards (missing, truncated, corrupt offsets, inflated counts, flipped bytes), model inputs and
MLM labels, GLUE files, tokenizers and NaN metrics."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from m2bert import M2BertConfig, M2BertForMaskedLM, M2BertForSequenceClassification
from m2bert.data.shards import ShardError, check_shards
from tests.conftest import copy_shards_as_converted

# ----------------------------------------------------------------------------- MDS shards


@pytest.fixture
def shards(sample_mds, tmp_path) -> Path:
    """A private copy of the sample's pre-tokenised shards (zstd only, as convert writes them)."""
    return copy_shards_as_converted(sample_mds["mds"], tmp_path / "mds")


def _index(split_dir: Path) -> dict:
    return json.loads((split_dir / "index.json").read_text())


def _zst(split_dir: Path) -> Path:
    return split_dir / _index(split_dir)["shards"][0]["zip_data"]["basename"]


def _make_raw(split_dir: Path) -> Path:
    """Decompress the first shard next to its .zstd: readers then use the raw file."""
    from streaming.base.compression import decompress

    shard = _index(split_dir)["shards"][0]
    raw = split_dir / shard["raw_data"]["basename"]
    raw.write_bytes(decompress(shard["compression"], _zst(split_dir).read_bytes()))
    return raw


def _loader(root: Path, tokenizer_dir: Path, **kw):
    from m2bert.data.mlm import build_mlm_dataloader
    from m2bert.data.tokenizer import load_tokenizer

    return build_mlm_dataloader(local=str(root), remote=None, split="val", tokenizer=load_tokenizer(tokenizer_dir),
                                max_seq_len=128, batch_size=8, mlm_probability=0.15, shuffle=False, seed=0, **kw)


def test_convert_writes_shard_hashes(sample_mds):
    shard = _index(sample_mds["mds"] / "train")["shards"][0]
    for info in (shard["raw_data"], shard["zip_data"]):
        assert set(info["hashes"]) == {"sha1", "xxh64"}
    assert check_shards(sample_mds["mds"] / "val", "xxh64") == shard_samples(sample_mds["mds"] / "val")


def shard_samples(split_dir: Path) -> int:
    return sum(s["samples"] for s in _index(split_dir)["shards"])


def test_truncated_zstd_shard_is_named_at_startup(shards):
    zst = _zst(shards / "val")
    zst.write_bytes(zst.read_bytes()[: zst.stat().st_size // 2])
    with pytest.raises(ShardError, match=rf"{zst}: \d+ bytes on disk, index.json says \d+.*m2bert-convert-c4"):
        check_shards(shards / "val")


def test_truncated_zstd_shard_reader_raises_instead_of_ending_the_epoch(shards, sample_mds):
    """Without the start-up check, streaming's prefetch thread fails quietly and the epoch ends with zero
    batches (an endless loop of empty epochs in training); the dataset now raises, naming the shard."""
    zst = _zst(shards / "val")
    zst.write_bytes(zst.read_bytes()[: zst.stat().st_size // 2])
    with pytest.raises(ShardError, match=rf"{zst.name}: cannot read shard"):
        for _ in _loader(shards, sample_mds["tokenizer"]):
            pass


def test_wait_for_a_shard_stops_at_the_prefetch_threads_error(shards, sample_mds):
    """A prefetch thread that fails on a shard leaves it PREPARING; a reader waiting for that shard raised nothing
    and waited forever (a hang seen in CI). It now stops at the thread's error, within a bounded time."""
    import threading

    from streaming.base.dataset import _ShardState

    dataset = _loader(shards, sample_mds["tokenizer"]).dataset
    dataset._shard_states[0] = _ShardState.PREPARING  # as a failed prefetch thread leaves it
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            dataset.prepare_shard(0, blocking=True)
        except BaseException as e:  # noqa: BLE001 - kept for the assertion
            outcome.append(e)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not outcome  # a shard being prepared is waited for
    dataset._m2_error = ShardError("shard.00000.mds.zstd: cannot read shard (the prefetch thread's error)")
    waiter.join(10)
    assert not waiter.is_alive() and isinstance(outcome[0], ShardError), outcome
    assert "the prefetch thread's error" in str(outcome[0])
    dataset._shard_states[0] = _ShardState.REMOTE


def test_missing_shard_file_is_named(shards):
    _zst(shards / "train").unlink()
    with pytest.raises(ShardError, match=r"shard\.00000\.mds or .*shard\.00000\.mds\.zstd is missing"):
        check_shards(shards / "train")


def test_truncated_raw_shard_is_named(shards):
    raw = _make_raw(shards / "val")
    raw.write_bytes(raw.read_bytes()[:-100])
    with pytest.raises(ShardError, match=rf"{raw}: \d+ bytes on disk"):
        check_shards(shards / "val")


def test_corrupt_offsets_are_named(shards):
    raw = _make_raw(shards / "val")
    assert check_shards(shards / "val", "sha1") == shard_samples(shards / "val")  # a sound raw shard passes
    data = bytearray(raw.read_bytes())
    data[8:12] = np.uint32(10**8).tobytes()  # the second sample's end offset, far past the file
    raw.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"{raw}: corrupt sample offsets"):
        check_shards(shards / "val")


def test_inflated_sample_count_is_named(shards):
    _make_raw(shards / "val")
    index = _index(shards / "val")
    index["shards"][0]["samples"] += 5
    (shards / "val" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match=r"holds \d+ samples, index.json says \d+"):
        check_shards(shards / "val")


def test_reader_names_the_shard_when_samples_are_missing(shards, sample_mds):
    """'Relative sample index N is not present' (a count larger than the shard) now names the shard."""
    raw = _make_raw(shards / "val")
    index = _index(shards / "val")
    index["shards"][0]["samples"] += 5
    (shards / "val" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match=rf"{raw.name}: cannot read sample"):
        for _ in _loader(shards, sample_mds["tokenizer"]):
            pass


@pytest.mark.parametrize("algo", ["sha1", "xxh64"])
def test_flipped_byte_is_caught_with_validate_hash(shards, algo):
    zst = _zst(shards / "val")
    data = bytearray(zst.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only a hash sees it
    zst.write_bytes(bytes(data))
    check_shards(shards / "val", None)  # opted out: sizes are right, so nothing else sees it up front
    with pytest.raises(ShardError, match=rf"{zst}: {algo} checksum does not match"):
        check_shards(shards / "val", algo)


def test_validate_hash_on_shards_without_hashes_names_the_fix(shards):
    index = _index(shards / "val")
    for s in index["shards"]:
        s["zip_data"]["hashes"] = {}
    (shards / "val" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match="has no sha1 hashes.*m2bert-convert-c4.*data.validate_hash=null"):
        check_shards(shards / "val", "sha1")
    assert check_shards(shards / "val") == shard_samples(shards / "val")  # auto: nothing to check against


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only a hash sees it
    path.write_bytes(bytes(data))


def test_flipped_byte_in_compressed_shard_is_refused_by_default(shards, sample_mds, tmp_path):
    """A flipped byte in a .mds.zstd decompressed to rows that trained silently (rc 0) with the old default
    data.validate_hash=null. Now the default (auto: xxh64, the cheapest hash the index holds) refuses it at
    start-up and in the loader, naming the shard; data.validate_hash=null opts out."""
    from m2bert.pretrain import check_data
    from tests.conftest import compose_pretrain, tiny_pretrain_overrides

    zst = _zst(shards / "val")
    _flip_byte(zst)
    overrides = tiny_pretrain_overrides(sample_mds, tmp_path / "runs", "flip") + [f"data.local={shards}"]
    with pytest.raises(ShardError, match=rf"^{zst}: xxh64 checksum does not match index.json"):
        check_data(compose_pretrain(overrides).data)
    with pytest.raises(ShardError, match=rf"^{zst}: cannot read shard \(ValueError: Checksum failure"):
        for _ in _loader(shards, sample_mds["tokenizer"]):
            pass
    check_data(compose_pretrain(overrides + ["data.validate_hash=null"]).data)


def test_raw_shard_without_its_compressed_form_is_named(shards, sample_mds):
    """Streaming deletes the raw file of a compressed shard whose .zstd is gone, then fails with "path to remote
    dataset must be provided"; the shard is named up front instead, and the raw file stays."""
    raw = _make_raw(shards / "val")
    zst = _zst(shards / "val")
    zst.unlink()
    match = rf"^{zst} is missing beside {raw.name} \(shards\[0\] of .*index.json"
    with pytest.raises(ShardError, match=match):
        check_shards(shards / "val")
    with pytest.raises(ShardError, match=match):
        _loader(shards, sample_mds["tokenizer"])
    assert raw.is_file()


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("field, name", [("raw_data", "../../escaped.mds"), ("zip_data", "../../escaped.mds.zstd"),
                                         ("zip_data", "{outside}"), ("zip_data", "{symlink}")])
def test_shard_basename_outside_the_data_folder_is_refused(shards, sample_mds, tmp_path, field, name):
    """A crafted index.json basename made streaming decompress attacker-chosen bytes outside the data folder (and
    read shards from anywhere). Every basename must resolve inside the split folder: '..', absolute paths and
    symlinks out are refused, naming the index entry, before streaming touches a file."""
    outside = tmp_path / "elsewhere" / "shard.mds.zstd"
    outside.parent.mkdir()
    zst = _zst(shards / "val")
    outside.write_bytes(zst.read_bytes())
    if name == "{symlink}":
        zst.unlink()
        zst.symlink_to(outside)
        name = zst.name
    name = name.replace("{outside}", str(outside))
    index = _index(shards / "val")
    index["shards"][0][field]["basename"] = name
    (shards / "val" / "index.json").write_text(json.dumps(index))
    before = _files(tmp_path)
    match = rf"^{shards / 'val' / 'index.json'}: shards\[0\]\.{field}\.basename='{re.escape(name)}' points outside"
    with pytest.raises(ShardError, match=match):
        for _ in _loader(shards, sample_mds["tokenizer"]):
            pass
    assert _files(tmp_path) == before  # nothing written (or deleted), inside the data folder or out of it
    with pytest.raises(ShardError, match=match):
        check_shards(shards / "val")


# ----------------------------------------------------------------------------- model inputs and MLM


@pytest.fixture(scope="module")
def tiny() -> M2BertForMaskedLM:
    torch.manual_seed(0)
    return M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=128)).eval()


def _ids(b: int = 2, n: int = 16) -> torch.Tensor:
    return torch.randint(5, 100, (b, n))


def test_mlm_loss_without_masked_tokens_is_zero_not_nan(tiny):
    ids = _ids()
    out = tiny(ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0 and out.logits.shape == (0, 128)
    out.loss.backward()  # still in the graph: a step on such a batch is a no-op, not an error
    tiny.zero_grad()


def test_composer_mlm_loss_without_masked_tokens_is_zero(tiny):
    from m2bert.train.composer_models import ComposerMLM

    model = ComposerMLM(tiny)
    batch = {"input_ids": _ids(), "attention_mask": torch.ones(2, 16, dtype=torch.long)}
    batch["labels"] = torch.full_like(batch["input_ids"], -100)
    assert model.loss(model(batch), batch).item() == 0.0


@pytest.mark.parametrize("make, match", [
    (lambda ids: {"input_ids": ids.clone().fill_(128)}, r"input_ids holds id 128, outside \[0, vocab_size=128\)"),
    (lambda ids: {"input_ids": ids.clone().fill_(-1)}, r"input_ids holds id -1"),
    (lambda ids: {"input_ids": ids, "token_type_ids": torch.full_like(ids, 2)}, r"token_type_ids holds 2"),
    (lambda ids: {"input_ids": ids, "attention_mask": torch.full_like(ids, 2)}, r"attention_mask must hold only 0"),
    (lambda ids: {"input_ids": ids, "attention_mask": torch.ones(2, 15, dtype=torch.long)},
     r"attention_mask has shape \(2, 15\) but input_ids has \(2, 16\)"),
    (lambda ids: {"input_ids": ids, "token_type_ids": torch.zeros(2, 1, dtype=torch.long)}, r"token_type_ids has shape"),
    (lambda ids: {"input_ids": ids[:0]}, r"input_ids is empty \(shape \(0, 16\)\)"),
    (lambda ids: {"input_ids": ids[:, :0]}, r"input_ids is empty \(shape \(2, 0\)\)"),
    (lambda ids: {"input_ids": ids[0]}, r"input_ids must be \(batch, length\)"),
    (lambda ids: {"input_ids": ids, "labels": ids[:, :3]}, r"labels has shape"),
])
def test_bad_model_inputs_are_one_line_errors(tiny, make, match):
    with pytest.raises(ValueError, match=match):
        tiny(**make(_ids()))


def test_classifier_checks_inputs_too():
    model = M2BertForSequenceClassification(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=128, num_labels=2))
    with pytest.raises(ValueError, match="input_ids holds id 500"):
        model(torch.full((1, 8), 500))


def test_value_checks_follow_check_inputs(tiny):
    """Default (None): value checks on CPU tensors only (no device sync); False: never; shapes always."""
    from m2bert.model.inputs import should_check_values

    cpu = torch.zeros(1, 1, dtype=torch.long)
    assert should_check_values(None, cpu) and should_check_values(True, cpu) and not should_check_values(False, cpu)
    assert not should_check_values(None, torch.zeros(1, 1, dtype=torch.long, device="meta"))
    off = M2BertForMaskedLM(M2BertConfig.from_preset("m2-bert-tiny", vocab_size=128, check_inputs=False))
    with pytest.raises(IndexError):  # unchecked: torch's own error, as before
        off(torch.full((1, 8), 500))
    with pytest.raises(ValueError, match="empty"):
        off(torch.zeros(0, 8, dtype=torch.long))


def test_collator_checks_each_batch(sample_mds):
    from m2bert.data.mlm import MLMCollator
    from m2bert.data.tokenizer import load_tokenizer

    tok = load_tokenizer(sample_mds["tokenizer"])
    collate = MLMCollator(tok, mlm_probability=0.15)
    good = {"input_ids": np.full(8, 200), "attention_mask": np.ones(8, int), "sample_idx": 3}
    assert collate([good])["input_ids"].shape == (1, 8)
    with pytest.raises(ValueError, match=rf"MLM batch \(batch of samples \[3, 4\]\): input_ids holds id {len(tok)}"):
        collate([good, dict(good, input_ids=np.full(8, len(tok)), sample_idx=4)])
    with pytest.raises(ValueError, match="attention_mask must hold only 0"):
        collate([dict(good, attention_mask=np.full(8, 3))])
    with pytest.raises(ValueError, match="token_type_ids holds 2"):
        collate([dict(good, token_type_ids=np.full(8, 2))])


def test_pretrain_value_checks():
    from omegaconf import OmegaConf

    from m2bert.options import ConfigError
    from m2bert.train.schema import PretrainConfig, register
    from m2bert.train.validate import check_pretrain, check_time

    register()  # the default run name's resolver
    base = OmegaConf.structured(PretrainConfig)
    check_pretrain(base)
    for key, value, match in [("eval_subset_num_batches", 0, "eval_subset_num_batches=0: use -1"),
                              ("global_train_batch_size", 0, "global_train_batch_size=0 must be a positive integer"),
                              ("device_eval_batch_size", -4, "device_eval_batch_size=-4"),
                              ("max_duration", "abc", "max_duration='abc' is not a positive Composer duration"),
                              ("max_duration", "0ba", "max_duration='0ba'"),
                              ("eval_interval", "10xx", "eval_interval='10xx'"),
                              ("optimizer.betas", [0.9], r"optimizer.betas=\[0.9\] must be two numbers"),
                              ("optimizer.betas", [0.9, 1.5], r"optimizer.betas=\[0.9, 1.5\]"),
                              ("data.validate_hash", "md5", "data.validate_hash='md5'; choose one of"),
                              ("max_duration", "1.5ep", "max_duration='1.5ep' is not a whole number of ep"),
                              ("max_duration", "0.5dur", "max_duration='0.5dur': a run's length is counted in ep"),
                              ("max_duration", "2h", "max_duration='2h': .*not wall-clock time"),
                              ("max_duration", "1e30ba",
                               r"max_duration='1e30ba' is out of range: at most 9223372036854775807 \(2\^63 - 1\)"),
                              ("eval_interval", "2.5ba", "eval_interval='2.5ba' is not a whole number of ba"),
                              ("global_train_batch_size", 10**20, r"out of range: at most 2147483647 \(2\^31 - 1\)"),
                              ("data.max_seq_len", 0, "data.max_seq_len=0 must be a positive integer"),
                              ("run_name", "../x", r"run_name='../x' is not a plain name")]:
        cfg = base.copy()
        OmegaConf.update(cfg, key, value)
        with pytest.raises(ConfigError, match=match):
            check_pretrain(cfg)
    for ok in ("286720000sp", "1ep", "0.5dur", "3e4tok", "2h30m", "100BA"):
        check_time("max_duration", ok)


def _accepts(check, text: str, errors: tuple[type[BaseException], ...]) -> bool:
    try:
        check(text)
    except errors:
        return False
    return True


def test_time_check_agrees_with_composer():
    """A time string passes our start-up check exactly when Composer takes it: any duration (Time.from_timestring),
    and for console_log_interval what its console logger takes (ep or ba; "2dur" passed our check, then failed
    in Composer's ConsoleLogger with a traceback)."""
    from composer.core.time import Time
    from composer.loggers import ConsoleLogger

    from m2bert.options import ConfigError
    from m2bert.train.validate import CONSOLE_UNITS, check_time

    texts = ("70000ba", "1ep", "0.06dur", "3e4tok", "12sp", "10sec", "1h", "abc", "ba", "10 ba x", "1.5.2ep", "1.5ep",
             "2.5ba", "2dur", "5iter", "100BA", "1e2ba", "3EP")
    for text in texts:
        # TypeError: a fraction of a counted unit
        assert _accepts(lambda t: check_time("max_duration", t), text, (ConfigError,)) == \
            _accepts(Time.from_timestring, text, (ValueError, TypeError)), text
        assert _accepts(lambda t: check_time("console_log_interval", t, units=CONSOLE_UNITS), text, (ConfigError,)) \
            == _accepts(lambda t: ConsoleLogger(log_interval=t), text, (ValueError, TypeError)), text


@pytest.mark.parametrize("field, value, limit", [("hidden_size", 10 ** 9, "32,768"), ("vocab_size", 10 ** 10, "2,097,152"),
                                                 ("max_position_embeddings", 0, "1,048,576")])
def test_model_folder_with_absurd_sizes_is_refused_before_allocating(tmp_path, field, value, limit):
    """A config.json asking for 1e9 hidden units (or 1e10 words, or no positions) is one line naming the field and
    its limit, before any weight is read or allocated (M2BertConfig.validate; for BERT, the start's check)."""
    from m2bert.glue.start import resolve_start
    from m2bert.options import ConfigError

    folder = tmp_path / "hf"
    folder.mkdir()
    config = M2BertConfig.from_preset("m2-bert-tiny").to_dict()
    (folder / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ConfigError, match=rf"config\.json: {field}={value} must be a positive integer <= {limit}$"):
        resolve_start("hf", str(folder))
    with pytest.raises(ValueError, match=rf"^{field}={value} must be"):
        M2BertConfig.from_dict({**config, field: value})
    bert = {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 2, field: value}
    (folder / "config.json").write_text(json.dumps(bert))
    with pytest.raises(ConfigError, match=rf"{field}={value} must be a positive integer"):
        resolve_start("hf", str(folder))


# ----------------------------------------------------------------------------- GLUE

_STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"


def _stsb_folder(root: Path, dev_scores: list[str]) -> Path:
    d = root / "STS-B"
    d.mkdir(parents=True)
    rows = [f"{i}\tg\tf\t2012\t{i}\ts\ts\ta cat sits\ta cat sat\t{s}" for i, s in enumerate(["1.0", "4.5", "2.0"])]
    (d / "train.tsv").write_text("\n".join([_STSB_HEADER, *rows]) + "\n")
    dev = [f"{i}\tg\tf\t2012\t{i}\ts\ts\tx y\ty z\t{s}" for i, s in enumerate(dev_scores)]
    (d / "dev.tsv").write_text("\n".join([_STSB_HEADER, *dev]) + "\n")
    return root


def _sample_folder(root: Path, ss_dev_labels: list[str], pair_dev_labels: list[str]) -> Path:
    for name, header, labels in (("SAMPLE-SS", "sentence\tlabel", ss_dev_labels),
                                 ("SAMPLE-PAIR", "sentence1\tsentence2\tlabel", pair_dev_labels)):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        text = "a b c\t" if name == "SAMPLE-SS" else "a b\tc d\t"
        (d / "train.tsv").write_text("\n".join([header] + [text + str(i % 2) for i in range(8)]) + "\n")
        (d / "dev.tsv").write_text("\n".join([header] + [text + lab for lab in labels]) + "\n")
    return root


@pytest.mark.parametrize("bad", ["42", "-0.5", "5.01"])
def test_stsb_scores_must_be_in_range(tmp_path, bad):
    from m2bert.data.glue_tasks import load_glue_task

    root = _stsb_folder(tmp_path, ["1.0", bad, "3.0"])
    with pytest.raises(ValueError, match=rf"STS-B/dev.tsv line 3: label '{bad}' is out of range for stsb; "
                                         r"scores must be decimal numbers in \[0, 5\] written with ASCII digits"):
        load_glue_task("stsb", root, "validation")


def _rte_folder(root: Path, dev_labels: list[str]) -> Path:
    d = root / "RTE"
    d.mkdir(parents=True)
    for name, labels in (("train.tsv", ["entailment", "not_entailment"]), ("dev.tsv", dev_labels)):
        rows = [f"{i}\ta b\tc d\t{lab}" for i, lab in enumerate(labels)]
        (d / name).write_text("\n".join(["index\tsentence1\tsentence2\tlabel", *rows]) + "\n")
    return root


@pytest.mark.parametrize("task, bad", [
    ("sample-ss", " 1 "), ("sample-ss", "\u0661"), ("sample-ss", "+1"), ("sample-ss", "1\u00a0"),
    ("stsb", " 3.5"), ("stsb", "\u0663.\u0665"), ("stsb", "0_5"), ("stsb", "1e0"), ("stsb", "nan"), ("stsb", "inf"),
    ("rte", " entailment"), ("rte", "entailment "),
])
def test_glue_labels_are_parsed_strictly(tmp_path, task, bad):
    """int() and float() took ' 1 ', an Arabic-Indic '١' and '0_5' as labels 1, 1 and 5.0 (and strip() a
    surrounding space from 'entailment'): labels are now the task's label set or ASCII digits, exactly, and a
    bad one names the file and line."""
    from m2bert.data.glue_tasks import load_glue_task

    if task == "stsb":
        root, folder, line = _stsb_folder(tmp_path, ["1.0", bad, "3.0"]), "STS-B", 3
    elif task == "rte":
        root, folder, line = _rte_folder(tmp_path, ["entailment", bad]), "RTE", 3
    else:
        root, folder, line = _sample_folder(tmp_path, ["0", "1", bad], ["0", "1"]), "SAMPLE-SS", 4
    with pytest.raises(ValueError, match=rf"{folder}/dev.tsv line {line}: bad label {re.escape(repr(bad))} for {task}; "
                                         r"(labels|scores) must be"):
        load_glue_task(task, root, "validation")


@pytest.mark.parametrize("bad", ["-1", "2", "x"])
def test_class_labels_must_be_in_range(tmp_path, bad):
    from m2bert.data.glue_tasks import load_glue_task

    root = _sample_folder(tmp_path, ["0", "1", bad], ["0", "1"])
    with pytest.raises(ValueError, match=rf"SAMPLE-SS/dev.tsv line 4: .*label '{bad}'.*integers in \[0, 1\]"):
        load_glue_task("sample-ss", root, "validation")


def test_every_task_is_checked_before_the_first_job(tmp_path):
    """A bad row in the second task's dev file stops the run at start-up, not after the first task trained."""
    from m2bert.glue.checks import check_data
    from m2bert.options import ConfigError

    root = _sample_folder(tmp_path, ["0", "1"], ["1", "0", "7"])
    check_data(str(root), ["sample-ss"])
    with pytest.raises(ConfigError, match=r"SAMPLE-PAIR/dev.tsv line 4: label '7' is out of range"):
        check_data(str(root), ["sample-ss", "sample-pair"])


def test_json_never_holds_nan(tmp_path, caplog):
    from m2bert.atomic import atomic_write_json

    path = tmp_path / "r.json"
    atomic_write_json(path, {"pearson": float("nan"), "x": [1.0, float("inf")], "ok": 0.5})

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"pearson": None, "x": [1.0, None], "ok": 0.5}
    assert "$.pearson=nan" in caplog.text


def test_glue_average_leaves_out_non_finite_scores(tmp_path):
    from m2bert.glue.results import write_results

    # Spearman (STS-B's score metric) of constant predictions is NaN; a NaN outside the score set (Pearson)
    # would not touch the score.
    jobs = [{"task": "stsb", "seed": 1, "metrics": {"validation": {"pearson": float("nan"), "spearmanr": float("nan")}}},
            {"task": "rte", "seed": 1, "metrics": {"validation": {"accuracy": 0.6}}},
            {"task": "mrpc", "seed": 1, "metrics": {"validation": {"f1": 0.8, "accuracy": float("nan")}}}]
    res = write_results(str(tmp_path), jobs, "m2-bert-tiny", "ours", published_path=str(tmp_path / "none.json"),
                        plot=False)
    assert res["glue_average"] == pytest.approx(70.0) and res["glue_average_excluded"] == ["stsb"]
    assert "Left out of the GLUE average (non-finite score): stsb" in res["table"]
    data = json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda t: pytest.fail(t))
    assert data["tasks"]["stsb"]["score"]["mean"] is None and math.isclose(data["glue_average"], 70.0)
    assert data["tasks"]["mrpc"]["score"]["mean"] == pytest.approx(80.0)


def _wordpiece(tmp_path: Path, name: str, words: str) -> Path:
    from m2bert.data.tokenizer import train_wordpiece

    return train_wordpiece([], tmp_path / name, vocab_size=300, min_frequency=1, texts=[words] * 20)


def test_tokenizer_must_be_the_models(tmp_path):
    from m2bert.data.tokenizer import load_tokenizer
    from m2bert.glue.checks import check_tokenizer
    from m2bert.options import ConfigError

    saved = _wordpiece(tmp_path, "hf", "alpha beta gamma delta epsilon")
    other = _wordpiece(tmp_path, "other", "one two three four five six")
    start = SimpleNamespace(kind="hf", path=str(saved), config=SimpleNamespace(vocab_size=1024), tokenizer=str(other))
    with pytest.raises(ConfigError, match=rf"start.tokenizer={other} has a different vocabulary than the tokenizer "
                                          rf"saved with the model in {saved}"):
        check_tokenizer(start, load_tokenizer(other))
    check_tokenizer(SimpleNamespace(**{**vars(start), "tokenizer": str(saved)}), load_tokenizer(saved))
    small = SimpleNamespace(**{**vars(start), "config": SimpleNamespace(vocab_size=64)})
    with pytest.raises(ConfigError, match=r"has \d+ tokens but the model's vocab_size is 64"):
        check_tokenizer(small, load_tokenizer(other))


def test_failed_later_task_keeps_finished_results(tiny_hf, tmp_path, monkeypatch):
    """The first task finishes, the second fails: results.json holds the first and names the failure."""
    import m2bert.glue.jobs as jobs
    from m2bert.glue.driver import run
    from tests.conftest import compose_glue

    def fake_job(spec, start=None):
        if spec.task == "sample-pair":
            raise RuntimeError("worker died")
        return {"task": spec.task, "seed": spec.seed, "metrics": {"validation": {"matthews_correlation": 0.25,
                                                                                 "accuracy": 0.75}}}

    monkeypatch.setattr(jobs, "run_job", fake_job)
    root = _sample_folder(tmp_path / "glue", ["0", "1"], ["1", "0"])
    cfg = compose_glue(["glue=m2_bert_tiny", f"start.path={tiny_hf}", f"data.source={root}",
                        "tasks=[sample-ss,sample-pair]", f"run_root={tmp_path}", "run_name=partial", "plot=false",
                        "device=cpu"])
    with pytest.raises(RuntimeError, match="worker died"):
        run(cfg)
    res = json.loads((tmp_path / "partial" / "results.json").read_text())
    assert res["failed"] == "RuntimeError: worker died"
    assert [j["task"] for j in res["jobs"]] == ["sample-ss"] and res["tasks"]["sample-ss"]["score"]["mean"] == 25.0  # Matthews, its score metric
